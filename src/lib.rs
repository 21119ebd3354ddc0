//! chatnode: an actor-based, high-performance chat server node.
//!
//! What each module owns, its key types and its invariants: the code map in `ARCHITECTURE.md`.
//! The client contract the node implements: `docs/protocol.md`.

pub mod actors;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod ids;
pub mod media;
pub mod node;
pub mod protocol;
pub mod push;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod web;

/// The node's memory allocator, jemalloc, which the `chatnode` binary and the benches install
/// (`#[global_allocator] static ALLOCATOR: chatnode::Allocator = chatnode::Allocator;`).
/// Against glibc's allocator it raised the store's sustained durable append rate by 8-20 % and
/// cut the writer's longest stalls (a flushed memtable's millions of nodes freed at once) from
/// 400-950 ms to about 200 ms, with the same saturation rate and memory per idle connection. mimalloc was as fast
/// in the store and 5-10 % faster at saturation, but kept a large upload's buffers: 35 MiB
/// resident after a 50 MiB upload against 20 MiB (docs/benchmarks.md, "The allocator").
pub use tikv_jemallocator::Jemalloc as Allocator;
