//! The wire contract of docs/protocol.md §3: frame types and their MessagePack codec.
//!
//! Invariant: this module knows no actors, sockets or storage; everything here is pure and
//! unit-tested.

pub mod codec;
pub mod frame;

pub use codec::{DecodeError, decode_request, encode, encode_err};
pub use frame::{
    ErrorCode, Id, MediaRef, MessageKind, MessageView, Request, SendRequest, ServerFrame,
};
