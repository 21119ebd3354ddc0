//! [`ChatError`]: why a chat request failed, in the terms of docs/protocol.md §3.6. Actors answer
//! with it; the WebSocket layer turns it into an `err` frame and the REST layer into a status
//! and `{"error":{"code","message"}}`.

use std::borrow::Cow;

use crate::protocol::ErrorCode;
use crate::store::StoreError;

/// A failed request: a wire code and a message safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn not_member() -> Self {
        Self::forbidden("you are not a member of this room")
    }

    pub fn no_room() -> Self {
        Self::not_found("no such room")
    }

    /// The store or an actor is unavailable; nothing was done.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the store is unavailable; nothing was stored, retry later",
        )
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        // The detail goes to the log, never to the client.
        tracing::warn!(error = %e, "store request failed");
        match e {
            StoreError::Corrupt(_) => Self::new(ErrorCode::Internal, "internal error"),
            StoreError::Unavailable(_) | StoreError::Closed => Self::unavailable(),
        }
    }
}

impl From<actix::MailboxError> for ChatError {
    fn from(_: actix::MailboxError) -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the room is restarting; retry in a moment",
        )
    }
}
