//! Storage: the [`Store`] trait every backend implements, the records it keeps, and its errors.
//!
//! Backends: [`embedded`] (fjall, the default) and [`scylla`]. Both must pass the shared suite
//! in [`conformance`]. Invariant: this module never imports actix; only `RoomActor`
//! writes chat messages through it.

pub mod conformance;
pub mod embedded;
pub mod scylla;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::{MediaRef, MessageKind};

/// What can go wrong in a backend. Everything except `Corrupt` means "try again later".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("a stored record could not be decoded: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// What went wrong, without the "unavailable" that wrapping it again would repeat.
    pub fn reason(&self) -> String {
        match self {
            Self::Unavailable(reason) => reason.clone(),
            other => other.to_string(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The kind of a room (docs/protocol.md §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Group,
    Direct,
    Open,
}

/// A room's durable description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub group: GroupId,
    pub room: RoomId,
    pub title: String,
    pub kind: RoomKind,
    pub owner: UserId,
    pub max: Option<u32>,
    /// An Argon2 PHC string, never the password itself.
    pub password_hash: Option<String>,
    pub created: i64,
}

/// A member of a room and their read cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub user: UserId,
    /// The id of the last message this member has read.
    pub cursor: MessageId,
    /// The room's message count up to and including `cursor`, so that a member's unread count
    /// is `room count - cursor_seq` without scanning messages.
    pub cursor_seq: u64,
    pub joined: i64,
}

/// A stored chat message. `seq` counts the room's messages (1 for the first), which lets the
/// chat list compute unread counts from cursors alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: MessageId,
    pub seq: u64,
    pub from: UserId,
    pub kind: MessageKind,
    pub text: Option<String>,
    pub media: Option<MediaRef>,
    pub ts: i64,
    pub cmid: Option<String>,
    pub edited: Option<i64>,
    pub deleted: bool,
}

/// The result of [`Store::append_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The message is durable.
    Stored,
    /// The same (user, room, cmid) was stored within the idempotency window: this is that one.
    Duplicate(StoredMessage),
}

/// The result of [`Store::create_room`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A room with that id exists already; here it is.
    Exists(RoomRecord),
}

/// Everything a RoomActor needs to start: the room, its members, and the latest messages.
#[derive(Debug, Clone)]
pub struct LoadedRoom {
    pub record: RoomRecord,
    pub members: Vec<MemberRecord>,
    /// The latest messages, oldest first (at most the number asked for).
    pub recent: Vec<StoredMessage>,
}

/// One entry of a user's chat list, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatListEntry {
    pub record: RoomRecord,
    pub members: u32,
    pub last: Option<StoredMessage>,
    pub unread: u64,
}

/// A page of messages, oldest first, and whether more exist beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub msgs: Vec<StoredMessage>,
    pub more: bool,
}

/// An uploaded media object as the store describes it (docs/protocol.md §6). The bytes live in the
/// media store (`crate::media`) under a key built from `group`, `room` and `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// 32 lowercase hex digits, chosen by the node.
    pub id: String,
    pub group: GroupId,
    pub room: RoomId,
    pub uploader: UserId,
    /// The declared (and checked) MIME type, without parameters.
    pub content_type: String,
    pub size: u64,
    /// The file name the uploader gave, if any (already validated).
    pub name: Option<String>,
    pub created: i64,
    /// True once an image's thumbnail is stored beside it.
    pub has_thumbnail: bool,
}

/// The platform of a push device (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Android,
    Ios,
    Web,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Android => "android",
            Self::Ios => "ios",
            Self::Web => "web",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "android" => Some(Self::Android),
            "ios" => Some(Self::Ios),
            "web" => Some(Self::Web),
            _ => None,
        }
    }
}

/// A user's device registered for push: its FCM registration token, when it was first
/// registered and when the app last registered it again (apps do so at every start).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The FCM registration token. A credential: never logged (see the `Debug` impl).
    pub token: String,
    pub platform: Platform,
    pub created: i64,
    pub last_used: i64,
}

/// Debug without the token: only a short digest of it, enough to tell devices apart in logs.
impl std::fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("token", &token_digest(&self.token))
            .field("platform", &self.platform)
            .field("created", &self.created)
            .field("last_used", &self.last_used)
            .finish()
    }
}

/// A short, stable digest of a token (device or access token) for logs: 8 hex digits of its
/// SHA-256, never the token itself.
pub fn token_digest(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    hex::encode(&digest[..4])
}

/// How long an idempotency key is honoured (docs/protocol.md §3.2: 24 hours).
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The storage contract. Writes return only once durable. Implementations are shared between
/// actors and routes as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers `Ok` when the backend serves reads and takes writes (`/readyz`), `Err` with the
    /// reason otherwise: the embedded store, for one, refuses writes after a failed one until
    /// it has reopened itself (see `embedded/health.rs`).
    async fn ping(&self) -> StoreResult<()>;

    /// Creates a room with its first members, unless a room with that id exists.
    async fn create_room(
        &self,
        record: RoomRecord,
        members: Vec<MemberRecord>,
    ) -> StoreResult<CreateOutcome>;

    async fn get_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<Option<RoomRecord>>;

    /// Deletes a room, its members, their chat-list entries, its messages, its keys and its
    /// media records (the media objects themselves are the media store's to delete).
    async fn delete_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<()>;

    /// Loads a room for its actor, with at most `recent` of its latest messages.
    async fn load_room(
        &self,
        group: &GroupId,
        room: &RoomId,
        recent: usize,
    ) -> StoreResult<Option<LoadedRoom>>;

    /// Adds or replaces a member (and their chat-list entry).
    async fn put_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        member: MemberRecord,
    ) -> StoreResult<()>;

    async fn remove_member(&self, group: &GroupId, room: &RoomId, user: &UserId)
    -> StoreResult<()>;

    /// Writes many members' read cursors at once (members that no longer exist are skipped).
    async fn save_cursors(
        &self,
        group: &GroupId,
        room: &RoomId,
        cursors: Vec<(UserId, MessageId, u64)>,
    ) -> StoreResult<()>;

    /// Appends a message. With `cmid`, the (sender, room, cmid) key makes the append
    /// idempotent for [`IDEMPOTENCY_WINDOW_MS`]: a second append returns the first message.
    async fn append_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<AppendOutcome>;

    /// Appends many messages of one room, as [`Store::append_message`] would one after the
    /// other, and answers their outcomes in the same order. A `cmid` repeated within `msgs`
    /// makes the later message a duplicate of the earlier one. `Ok` means every stored message
    /// is durable. On `Err` none of them may be acknowledged: the embedded store wrote none of
    /// them, ScyllaDB may have written some, so a retry must reuse the same `cmid`s. The
    /// embedded store applies them as one write of one group commit.
    async fn append_messages(
        &self,
        group: &GroupId,
        room: &RoomId,
        msgs: Vec<StoredMessage>,
    ) -> StoreResult<Vec<AppendOutcome>>;

    /// Replaces a stored message (edit or tombstone). A tombstone is never overwritten by a
    /// later non-deleted version: deletion wins.
    async fn update_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<()>;

    async fn get_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>>;

    /// The messages with id < `before` (or the latest), oldest first, at most `limit`.
    async fn messages_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page>;

    /// The messages with id > `since`, oldest first, at most `limit`; `more` when newer remain.
    async fn messages_after(
        &self,
        group: &GroupId,
        room: &RoomId,
        since: MessageId,
        limit: usize,
    ) -> StoreResult<Page>;

    /// The latest message with id <= `id`, if any (to learn a cursor's `seq`).
    async fn message_at_or_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>>;

    /// The user's rooms in a group, most recent activity first.
    async fn chat_list(&self, user: &UserId, group: &GroupId) -> StoreResult<Vec<ChatListEntry>>;

    /// Records an uploaded media object (replacing a record with the same id).
    async fn put_media(&self, media: MediaRecord) -> StoreResult<()>;

    async fn get_media(&self, id: &str) -> StoreResult<Option<MediaRecord>>;

    /// Notes that the media's thumbnail is stored. `false` when the record is gone (the media
    /// was deleted meanwhile): it is never brought back.
    async fn set_media_thumbnail(&self, id: &str) -> StoreResult<bool>;

    /// Deletes a media record (nothing happens when there is none).
    async fn delete_media(&self, id: &str) -> StoreResult<()>;

    /// Registers a push device for `user`, or refreshes it: a known token keeps its `created`
    /// and takes the new `platform` and `last_used`.
    async fn put_device(&self, user: &UserId, device: DeviceRecord) -> StoreResult<()>;

    /// Forgets one of the user's devices (nothing happens when it is not registered).
    async fn delete_device(&self, user: &UserId, token: &str) -> StoreResult<()>;

    /// The devices of each of `users` who has any, in the order of `users`.
    async fn devices_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, Vec<DeviceRecord>)>>;

    /// Mutes or unmutes a room's push notifications for one of its members. Removing the member
    /// or deleting the room forgets the mute.
    async fn set_muted(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> StoreResult<()>;

    /// Which of `users` have muted the room.
    async fn muted_among(
        &self,
        group: &GroupId,
        room: &RoomId,
        users: &[UserId],
    ) -> StoreResult<std::collections::HashSet<UserId>>;

    /// Flushes and syncs everything; called once at shutdown.
    async fn close(&self) -> StoreResult<()>;
}

pub type SharedStore = Arc<dyn Store>;
