//! chatnode: an actor-based, high-performance chat server node.
//!
//! Start with `ARCHITECTURE.md`. The modules follow the data flow: [`protocol`] (the wire),
//! [`session`] (connections), [`actors`] (supervisor → groups → rooms), [`store`] (durable
//! state), [`media`] (uploaded files), [`api`] (REST), and [`node`] (wiring and shutdown).

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
