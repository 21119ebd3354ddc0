//! Connections: the WebSocket endpoint ([`ws`]), the per-connection outbound queue
//! ([`handle`]) and the rate limit ([`ratelimit`]).

pub mod handle;
pub mod ratelimit;
pub mod sse;
pub mod ws;
