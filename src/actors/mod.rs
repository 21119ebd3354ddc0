//! The actor tree, as DESIGN.md draws it:
//!
//! ```text
//! NodeSupervisor ──owns──> GroupActor (one per group) ──owns──> RoomActor (one per active room)
//!       ^                        ^ `sub` connections                 │ members, presence, cursors,
//!       │                        │                                   │ id stamping, fan-out
//! connections (WebSocket / SSE) ─┴────── requests ───────────────────┘──> Store
//! ```
//!
//! - [`supervisor::NodeSupervisor`]: starts a group on first use (on one of the node's group
//!   arbiters), restarts one that died, forgets idle ones. Knows nothing of rooms.
//! - [`group::GroupActor`]: loads rooms from the store and starts their actors, holds the
//!   group's `sub` connections, forwards `room` events to them.
//! - [`room::RoomActor`]: the single writer of one room.
//!
//! Replies travel through a [`Responder`]: straight into a connection's outbound queue as an
//! encoded frame, or through a oneshot to a REST handler. Handlers never wait on connections.

pub mod directory;
pub mod group;
pub mod room;
pub mod supervisor;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Settings;
use crate::error::ChatError;
use crate::ids::{GroupId, MessageId, RoomId, Snowflake};
use crate::protocol::{Id, MessageView, ServerFrame, encode, encode_err};
use crate::session::handle::SessionHandle;
use crate::store::{SharedStore, StoredMessage};

/// What every actor of the tree shares.
#[derive(Clone)]
pub struct ActorDeps {
    pub settings: Arc<Settings>,
    pub store: SharedStore,
    pub snowflake: Arc<Snowflake>,
    /// Uploaded files: rooms delete a message's media and a deleted room's media.
    pub media: crate::media::SharedMedia,
    /// Push to members who are away (disabled without an FCM key).
    pub push: crate::push::PushHandle,
}

/// Where a reply goes.
pub enum Responder<T> {
    /// Into a connection's queue, as a frame echoing `r`.
    Session {
        session: SessionHandle,
        r: Option<u32>,
    },
    /// To a waiting REST handler.
    Channel(oneshot::Sender<Result<T, ChatError>>),
}

impl<T: WsReply> Responder<T> {
    /// A responder for a REST handler, and the receiver it waits on.
    pub fn channel() -> (Self, oneshot::Receiver<Result<T, ChatError>>) {
        let (tx, rx) = oneshot::channel();
        (Self::Channel(tx), rx)
    }

    pub fn respond(self, group: &GroupId, room: &RoomId, result: Result<T, ChatError>) {
        match self {
            Self::Session { session, r } => {
                let bytes = match &result {
                    Ok(value) => value.encode(group.as_str(), room.as_str(), r),
                    Err(e) => encode_err(r, e.code, &e.message),
                };
                session.send_bytes(bytes);
            }
            Self::Channel(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// A reply that can be written as a WebSocket frame.
pub trait WsReply {
    fn encode(&self, group: &str, room: &str, r: Option<u32>) -> Bytes;
}

impl WsReply for () {
    fn encode(&self, _group: &str, _room: &str, r: Option<u32>) -> Bytes {
        encode(&ServerFrame::Ok { r })
    }
}

/// The `sent` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SentInfo {
    #[schema(value_type = String)]
    pub group: GroupId,
    #[schema(value_type = String)]
    pub room: RoomId,
    /// The message id (a decimal string in JSON).
    #[schema(value_type = String)]
    pub id: Id,
    pub ts: i64,
    pub unread: u32,
    pub cmid: String,
}

impl WsReply for SentInfo {
    fn encode(&self, group: &str, room: &str, r: Option<u32>) -> Bytes {
        encode(&ServerFrame::Sent {
            r,
            group,
            room,
            id: self.id,
            ts: self.ts,
            unread: self.unread,
            cmid: &self.cmid,
        })
    }
}

/// A message with its current unread count, as replies carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    pub msg: StoredMessage,
    pub unread: u32,
}

impl OutMessage {
    pub fn view(&self) -> MessageView<'_> {
        let m = &self.msg;
        MessageView {
            id: Id(m.id),
            from: m.from.as_str(),
            kind: m.kind,
            text: m.text.as_deref(),
            media: m.media.as_ref(),
            ts: m.ts,
            unread: self.unread,
            cmid: m.cmid.as_deref(),
            edited: m.edited,
            deleted: m.deleted,
        }
    }
}

impl Serialize for OutMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// A page of history (`page`, or REST `{msgs, more}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PageReply {
    /// Oldest first.
    #[schema(value_type = Vec<crate::protocol::MessageView>)]
    pub msgs: Vec<OutMessage>,
    pub more: bool,
}

impl WsReply for PageReply {
    fn encode(&self, group: &str, room: &str, r: Option<u32>) -> Bytes {
        let views: Vec<MessageView<'_>> = self.msgs.iter().map(OutMessage::view).collect();
        encode(&ServerFrame::Page {
            r,
            group,
            room,
            msgs: &views,
            more: self.more,
        })
    }
}

/// The `entered` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnteredReply {
    /// The room's latest durable id when the connection entered: later messages reach it as
    /// live events (not part of the `entered` frame).
    pub latest: MessageId,
    pub members: u32,
    pub present: Vec<String>,
    pub cursor: MessageId,
    pub msgs: Vec<OutMessage>,
    pub more: bool,
}

impl WsReply for EnteredReply {
    fn encode(&self, group: &str, room: &str, r: Option<u32>) -> Bytes {
        let views: Vec<MessageView<'_>> = self.msgs.iter().map(OutMessage::view).collect();
        let present: Vec<&str> = self.present.iter().map(String::as_str).collect();
        encode(&ServerFrame::Entered {
            r,
            group,
            room,
            members: self.members,
            present: &present,
            cursor: Id(self.cursor),
            msgs: &views,
            more: self.more,
        })
    }
}
