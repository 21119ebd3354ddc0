//! The frames of docs/protocol.md §3: what a client may ask ([`Request`]) and what the server says
//! ([`ServerFrame`]), plus the message object of §3.5 ([`MessageView`]).
//!
//! This module knows nothing of sockets or actors. Server frames borrow their data so that
//! encoding one costs no clones; message ids go through [`Id`], which writes an unsigned
//! integer in MessagePack and a decimal string in JSON (ids exceed 2^53).

use serde::{Deserialize, Serialize, Serializer};

use crate::ids::{GroupId, MessageId, RoomId, UserId};

/// A message id on the wire: a MessagePack unsigned integer, a JSON decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub MessageId);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(&self.0)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

/// The kind of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Text,
    Image,
    Video,
    File,
}

impl MessageKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "image" => Some(Self::Image),
            "video" => Some(Self::Video),
            "file" => Some(Self::File),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::File => "file",
        }
    }
}

/// The `err` codes of §3.6 (and the few this node adds, such as `conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    RateLimited,
    TooLarge,
    RoomFull,
    BadPassword,
    Unavailable,
    Internal,
    /// Added by this node: the thing to create exists already.
    Conflict,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownType => "unknown_type",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::RoomFull => "room_full",
            Self::BadPassword => "bad_password",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Conflict => "conflict",
        }
    }
}

/// A media object as carried by a message (§3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaRef {
    pub id: String,
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Added by this node: a thumbnail exists (`GET /v1/media/{id}/thumbnail`).
    #[serde(default)]
    pub thumbnail: bool,
}

/// The message object of §3.5, borrowed from the room's state for encoding.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct MessageView<'a> {
    /// The message id (a decimal string in JSON).
    #[schema(value_type = String)]
    pub id: Id,
    pub from: &'a str,
    pub kind: MessageKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<&'a MediaRef>,
    pub ts: i64,
    pub unread: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The last-message summary carried by `room` events and the chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageSummary {
    #[schema(value_type = String)]
    pub id: Id,
    pub from: String,
    pub kind: MessageKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub ts: i64,
}

/// How many characters of text a summary keeps (§3.4).
pub const SUMMARY_TEXT_CHARS: usize = 100;

/// Cuts `text` to [`SUMMARY_TEXT_CHARS`] characters, never inside a UTF-8 sequence.
pub fn summary_text(text: &str) -> String {
    match text.char_indices().nth(SUMMARY_TEXT_CHARS) {
        Some((cut, _)) => text[..cut].to_owned(),
        None => text.to_owned(),
    }
}

/// The `kind` of a `room` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomEventKind {
    Updated,
    Created,
    Deleted,
    Members,
}

/// The `limits` object of `hello`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HelloLimits {
    pub frame: usize,
    pub text: usize,
    pub rate: u32,
}

/// Every frame the server sends. `r` echoes the request's `r` on replies and errors.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Hello {
        user: &'a str,
        node: u16,
        proto: u8,
        heartbeat: u64,
        limits: HelloLimits,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
    },
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
    },
    Entered {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
        group: &'a str,
        room: &'a str,
        members: u32,
        present: &'a [&'a str],
        cursor: Id,
        msgs: &'a [MessageView<'a>],
        more: bool,
    },
    Sent {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
        group: &'a str,
        room: &'a str,
        id: Id,
        ts: i64,
        unread: u32,
        cmid: &'a str,
    },
    Page {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
        group: &'a str,
        room: &'a str,
        msgs: &'a [MessageView<'a>],
        more: bool,
    },
    Msg {
        group: &'a str,
        room: &'a str,
        id: Id,
        from: &'a str,
        kind: MessageKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        media: Option<&'a MediaRef>,
        ts: i64,
        unread: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        cmid: Option<&'a str>,
    },
    Receipt {
        group: &'a str,
        room: &'a str,
        user: &'a str,
        from: Id,
        to: Id,
    },
    Presence {
        group: &'a str,
        room: &'a str,
        user: &'a str,
        present: bool,
    },
    Typing {
        group: &'a str,
        room: &'a str,
        user: &'a str,
    },
    Edited {
        group: &'a str,
        room: &'a str,
        id: Id,
        text: &'a str,
        edited: i64,
    },
    Deleted {
        group: &'a str,
        room: &'a str,
        id: Id,
    },
    Room {
        group: &'a str,
        room: &'a str,
        kind: RoomEventKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        last: Option<&'a MessageSummary>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unread: Option<u64>,
    },
    Err {
        #[serde(skip_serializing_if = "Option::is_none")]
        r: Option<u32>,
        code: ErrorCode,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// The frame's `t`, for metrics and SSE `event:` lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Pong { .. } => "pong",
            Self::Ok { .. } => "ok",
            Self::Entered { .. } => "entered",
            Self::Sent { .. } => "sent",
            Self::Page { .. } => "page",
            Self::Msg { .. } => "msg",
            Self::Receipt { .. } => "receipt",
            Self::Presence { .. } => "presence",
            Self::Typing { .. } => "typing",
            Self::Edited { .. } => "edited",
            Self::Deleted { .. } => "deleted",
            Self::Room { .. } => "room",
            Self::Err { .. } => "err",
        }
    }
}

/// A `send` request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub group: GroupId,
    pub room: RoomId,
    pub kind: MessageKind,
    pub text: Option<String>,
    pub media: Option<String>,
    pub cmid: String,
    /// Only honoured for service tokens: send as this user.
    pub from: Option<UserId>,
}

/// Every request of §3.2, validated: ids parsed, limits applied, required fields present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Sub {
        group: GroupId,
    },
    Unsub {
        group: GroupId,
    },
    Enter {
        group: GroupId,
        room: RoomId,
        since: Option<MessageId>,
        limit: usize,
    },
    Leave {
        group: GroupId,
        room: RoomId,
    },
    Send(SendRequest),
    Read {
        group: GroupId,
        room: RoomId,
        id: MessageId,
    },
    History {
        group: GroupId,
        room: RoomId,
        before: Option<MessageId>,
        limit: usize,
    },
    Typing {
        group: GroupId,
        room: RoomId,
    },
    Edit {
        group: GroupId,
        room: RoomId,
        id: MessageId,
        text: String,
    },
    Delete {
        group: GroupId,
        room: RoomId,
        id: MessageId,
    },
}

impl Request {
    /// The request's `t`, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Sub { .. } => "sub",
            Self::Unsub { .. } => "unsub",
            Self::Enter { .. } => "enter",
            Self::Leave { .. } => "leave",
            Self::Send(_) => "send",
            Self::Read { .. } => "read",
            Self::History { .. } => "history",
            Self::Typing { .. } => "typing",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
        }
    }

    /// The group the request is about, for the token's `groups` claim.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            Self::Ping => None,
            Self::Sub { group }
            | Self::Unsub { group }
            | Self::Enter { group, .. }
            | Self::Leave { group, .. }
            | Self::Read { group, .. }
            | Self::History { group, .. }
            | Self::Typing { group, .. }
            | Self::Edit { group, .. }
            | Self::Delete { group, .. } => Some(group),
            Self::Send(send) => Some(&send.group),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_cuts_on_characters() {
        let long = "가".repeat(150);
        assert_eq!(summary_text(&long).chars().count(), 100);
        assert_eq!(summary_text("short"), "short");
    }

    #[test]
    fn ids_are_strings_in_json() {
        let json = serde_json::to_string(&Id(u64::MAX)).expect("json");
        assert_eq!(json, format!("\"{}\"", u64::MAX));
    }
}
