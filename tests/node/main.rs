//! Integration tests: the real `chatnode` binary on a free port, real WebSocket and HTTP
//! clients. One file per feature.

mod chat;
mod crash;
mod errors;
mod faults;
mod fcm_mock;
mod helpers;
mod http;
mod lifecycle;
mod media;
mod push;
mod rooms;
mod slow_clients;
mod store_faults;
mod web;
