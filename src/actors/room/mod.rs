//! `RoomActor`: the single writer of one room on this node.
//!
//! It owns the member list with every member's read cursor (also kept as a sorted vector, so a
//! message's unread count is one binary search), who is present (user → connections), the
//! latest messages, and the recent `cmid`s. It stamps each new message with a snowflake id,
//! hands it to the store (every message stamped in one wake-up of the actor goes as one
//! [`Store::append_messages`](crate::store::Store::append_messages) call, so a busy room pays
//! one store round trip per batch, not per message), and only when the store says it is
//! durable replies `sent`, encodes the `msg` frame **once** and queues the same bytes for
//! every present connection. Durable completions may arrive out of order (ScyllaDB); the
//! pending queue releases messages strictly in id order.
//!
//! Started by its [`GroupActor`] with the room's state already loaded; stops when idle, when
//! the room is deleted, at shutdown, or when its group dies (then the restarted group reloads
//! it from the store).
//!
//! The room's state lives in plain, actix-free and store-free parts, each with its rules and
//! their unit tests: [`members`] (members and read cursors), [`presence`] (who is present,
//! the typing throttle), [`cache`] (the latest messages), [`pipeline`] (stamped messages
//! waiting for the store, released in id order) and [`cmids`] (recent client message ids).
//! The handlers here check, update that state, start the I/O and broadcast.

pub mod cache;
pub mod cmids;
pub mod cursors;
pub mod members;
pub mod pipeline;
pub mod presence;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use self::cache::HistoryCache;
use self::cmids::{CmidKey, RecentCmids, Seen};
use self::members::{Cursor, Members};
use self::pipeline::Pipeline;
use self::presence::Presence;
use super::group::{GroupActor, MemberRead, MoreActivity, RoomActivity, RoomStopped};
use super::{ActorDeps, EnteredReply, OutMessage, PageReply, Responder, SentInfo};
use crate::error::ChatError;
use crate::ids::{GroupId, MessageId, RoomId, Snowflake, UserId, now_ms};
use crate::media::types::{is_media_id, kind_of};
use crate::protocol::frame::{MessageSummary, RoomEventKind, summary_text};
use crate::protocol::{ErrorCode, Id, MediaRef, MessageKind, ServerFrame};
use crate::push::MessageNote;
use crate::session::handle::{Encoded, SessionHandle, SessionId};
use crate::store::{
    AppendOutcome, LoadedRoom, MediaRecord, MemberRecord, Page, RoomKind, RoomRecord, SharedStore,
    StoreError, StoredMessage,
};

/// The room's maps are keyed by ids it hashes on every message (members, presence, the moved
/// cursors): foldhash, seeded per map, is several times faster than std's SipHash on short
/// keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// At most one `typing` per user and room is forwarded in this interval (docs/protocol.md §3.2).
const TYPING_INTERVAL: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The actor's API.

/// A connection enters the room (`enter`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub session: SessionHandle,
    pub service: bool,
    pub since: Option<MessageId>,
    pub limit: usize,
    pub responder: Responder<EnteredReply>,
}

/// A connection leaves the room (`leave`, or the connection ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub session: SessionId,
}

/// A new message (`send`, or REST).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PostMessage {
    /// The author: the caller, or for a service token the user it sends as.
    pub from: UserId,
    /// The author's display name from their token, when they send as themself (push titles).
    pub from_name: Option<String>,
    /// A service token may post to any room, and as any member.
    pub service: bool,
    pub kind: MessageKind,
    pub text: Option<String>,
    pub media: Option<String>,
    pub cmid: String,
    pub responder: Responder<SentInfo>,
}

/// The user has read up to `id` (`read`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MarkRead {
    pub user: UserId,
    pub id: MessageId,
    pub responder: Responder<()>,
}

/// A page of history (`history`, or REST).
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetHistory {
    pub user: UserId,
    pub service: bool,
    pub before: Option<MessageId>,
    pub limit: usize,
    pub responder: Responder<PageReply>,
}

/// The messages after `since`, oldest first (SSE replay beyond the first page).
#[derive(Message)]
#[rtype(result = "()")]
pub struct GetAfter {
    pub user: UserId,
    pub service: bool,
    pub since: MessageId,
    pub limit: usize,
    pub responder: Responder<PageReply>,
}

/// The connection's user is typing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Typing {
    pub session: SessionHandle,
    /// The request's `r`, for the `err` a non-member gets.
    pub r: Option<u32>,
}

/// The author edits a message's text.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EditMessage {
    pub user: UserId,
    pub id: MessageId,
    pub text: String,
    pub responder: Responder<()>,
}

/// The author or the owner deletes a message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteMessage {
    pub user: UserId,
    pub service: bool,
    pub id: MessageId,
    pub responder: Responder<()>,
}

/// Adds a member (the owner or a service), or a user joins an open room (`join`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddMember {
    pub caller: UserId,
    pub service: bool,
    pub user: UserId,
    /// True for `join`: the caller adds themself to an `open` room.
    pub join: bool,
    pub responder: Responder<()>,
}

/// Removes a member (themself, the owner, or a service).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveMember {
    pub caller: UserId,
    pub service: bool,
    pub user: UserId,
    pub responder: Responder<()>,
}

/// The room as its members see it (`GET .../rooms/{room}`).
#[derive(Message)]
#[rtype(result = "Result<RoomInfo, ChatError>")]
pub struct GetRoomInfo {
    pub caller: UserId,
    pub service: bool,
}

/// Whether the caller may see the room's content (a member, or a service token): the media
/// routes ask this before they serve or accept a file.
#[derive(Message)]
#[rtype(result = "Result<(), ChatError>")]
pub struct GetMembership {
    pub user: UserId,
    pub service: bool,
}

/// A member's unread count in the room as the room holds it now: the chat list asks active
/// rooms, because the store's copy of the cursors is written only every
/// `rooms.cursor_flush_ms`. `None` when `user` is no member.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct GetUnread {
    pub user: UserId,
}

/// A snapshot of the room for REST.
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub record: RoomRecord,
    pub members: Vec<UserId>,
}

/// Deletes the room (the owner or a service); present connections are told, the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteRoom {
    pub caller: UserId,
    pub service: bool,
    pub responder: Responder<()>,
}

/// Flushes cursors and stops (node shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

// ---------------------------------------------------------------------------------------------
// The actor.

/// A stamped message waiting for the store.
struct Pending {
    msg: StoredMessage,
    /// The author's display name, for push.
    from_name: Option<String>,
    responder: Responder<SentInfo>,
}

pub struct RoomActor {
    deps: ActorDeps,
    group_id: GroupId,
    room_id: RoomId,
    record: RoomRecord,
    group: Addr<GroupActor>,
    group_alive: CancellationToken,
    generation: u64,
    group_subscribers: Arc<AtomicUsize>,
    members: Members,
    /// The connections present, to fan out to.
    sessions: HashMap<SessionId, SessionHandle>,
    presence: Presence,
    cache: HistoryCache,
    last_id: MessageId,
    last_seq: u64,
    next_seq: u64,
    pending: Pipeline<Pending>,
    /// Stamped messages not yet handed to the store: they go together, as one
    /// `append_messages` call, once the actor has handled what its mailbox holds.
    to_store: Vec<StoredMessage>,
    /// Media messages whose media record is being looked up, by lookup number. They are
    /// stamped when the lookup returns, so ids stay in the order the room stamps them.
    media_lookups: HashMap<u64, PostMessage>,
    next_lookup: u64,
    cmids: RecentCmids<Responder<SentInfo>>,
    last_activity: Instant,
    closing: bool,
    /// Waiting for the pending queue to empty before a drain completes.
    drained: Vec<tokio::sync::oneshot::Sender<()>>,
    /// When and for whose message the last full list of absent members went to push, while
    /// nobody in the group was subscribed. For [`crate::push::list_reuse`] after it, a next
    /// message by the same sender with nothing changed meanwhile (`push_stale`) only says
    /// "one more" (O(1)).
    push_full: Option<(Instant, UserId)>,
    /// Presence, membership or a cursor moved since `push_full`.
    push_stale: bool,
}

/// What a group passes to start a room.
pub struct RoomStart {
    pub deps: ActorDeps,
    pub loaded: LoadedRoom,
    pub group: Addr<GroupActor>,
    pub group_alive: CancellationToken,
    pub generation: u64,
    pub group_subscribers: Arc<AtomicUsize>,
}

impl RoomActor {
    pub fn new(start: RoomStart) -> Self {
        let RoomStart {
            deps,
            loaded,
            group,
            group_alive,
            generation,
            group_subscribers,
        } = start;
        let (last_id, last_seq) = loaded.recent.last().map_or((0, 0), |m| (m.id, m.seq));
        deps.snowflake.observe(last_id);
        let rooms = &deps.settings.rooms;
        let cache = HistoryCache::new(loaded.recent, rooms.cache_messages);
        let cmids = RecentCmids::new(rooms.recent_cmids);
        Self {
            group_id: loaded.record.group.clone(),
            room_id: loaded.record.room.clone(),
            record: loaded.record,
            deps,
            group,
            group_alive,
            generation,
            group_subscribers,
            members: Members::new(loaded.members),
            sessions: HashMap::default(),
            presence: Presence::new(TYPING_INTERVAL),
            cache,
            last_id,
            last_seq,
            next_seq: last_seq,
            pending: Pipeline::default(),
            to_store: Vec::new(),
            media_lookups: HashMap::default(),
            next_lookup: 0,
            cmids,
            last_activity: Instant::now(),
            closing: false,
            drained: Vec::new(),
            push_full: None,
            push_stale: false,
        }
    }

    fn is_member(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }

    /// `user`'s unread count in the room (messages above their cursor); `None` for a
    /// non-member.
    fn unread_of(&self, user: &UserId) -> Option<u64> {
        self.members.unread_of(user, self.last_seq)
    }

    /// The number of members whose cursor is below `id`.
    fn unread(&self, id: MessageId) -> u32 {
        self.members.unread(id)
    }

    fn out(&self, msg: StoredMessage) -> OutMessage {
        let unread = self.unread(msg.id);
        OutMessage { msg, unread }
    }

    /// Moves a member's cursor forward; returns the old cursor when it moved.
    fn advance_cursor(&mut self, user: &UserId, to: MessageId, to_seq: u64) -> Option<MessageId> {
        self.members.advance(
            user,
            Cursor {
                id: to,
                seq: to_seq,
            },
        )
    }

    fn insert_member(&mut self, user: UserId, cursor: Cursor) {
        self.push_stale = true;
        self.members.insert(user, cursor);
    }

    fn drop_member(&mut self, user: &UserId) {
        self.push_stale = true;
        self.members.remove(user);
    }

    fn broadcast(&self, frame: &ServerFrame<'_>, except: Option<SessionId>) {
        if self.sessions.is_empty() {
            return;
        }
        let encoded = Encoded::new(frame);
        let mut sent = 0u64;
        for (id, session) in &self.sessions {
            if Some(*id) != except && session.deliver(&encoded) {
                sent += 1;
            }
        }
        metrics::counter!("chatnode_frames_out_total", "type" => frame.kind()).increment(sent);
    }

    fn broadcast_except_user(&self, frame: &ServerFrame<'_>, user: &UserId) {
        let encoded = Encoded::new(frame);
        for session in self.sessions.values() {
            if session.user() != user {
                session.deliver(&encoded);
            }
        }
    }

    fn send_receipt(&self, user: &UserId, from: MessageId, to: MessageId) {
        self.broadcast(
            &ServerFrame::Receipt {
                group: self.group_id.as_str(),
                room: self.room_id.as_str(),
                user: user.as_str(),
                from: Id(from),
                to: Id(to),
            },
            None,
        );
    }

    /// Tells the group's subscribers among `users` (members not present here) about the room.
    fn notify_group(&self, users: Vec<UserId>, kind: RoomEventKind) {
        if users.is_empty() || self.group_subscribers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let recipients = users
            .into_iter()
            .filter(|u| !self.presence.contains(u))
            .map(|u| {
                let unread = self.unread_of(&u).unwrap_or(0);
                (u, unread)
            })
            .collect::<Vec<_>>();
        self.send_activity(kind, recipients, None);
    }

    /// After a new message, every member who is not present hears of it through the group, and
    /// with push on (`push`) the group also hands those without a subscribed connection to
    /// push, so then the activity goes even when nobody is subscribed. One pass over the
    /// members, and nothing is built when nobody would hear.
    fn notify_absent(&mut self, push: Option<Arc<MessageNote>>) {
        let subscribed = self.group_subscribers.load(Ordering::Relaxed) > 0;
        let reuse =
            crate::push::list_reuse(Duration::from_millis(self.deps.settings.push.coalesce_ms));
        if let Some(note) = &push
            && !subscribed
            && !self.push_stale
            && self
                .push_full
                .as_ref()
                .is_some_and(|(at, from)| at.elapsed() < reuse && *from == note.from)
        {
            // The same members are away as for the last full list: the push actor counts one
            // more message for each of them, and this room does no work per member. Through
            // the group, like the list, so it cannot arrive first.
            self.group.do_send(MoreActivity {
                room: self.room_id.clone(),
                note: note.clone(),
            });
            return;
        }
        if push.is_none() && !subscribed {
            return;
        }
        if let Some(note) = &push {
            // With subscribers the group filters the list, so it cannot stand for later ones.
            self.push_full = (!subscribed).then(|| (Instant::now(), note.from.clone()));
            self.push_stale = false;
        }
        let mut recipients =
            Vec::with_capacity(self.members.len().saturating_sub(self.presence.count()));
        recipients.extend(
            self.members
                .iter()
                .filter(|(user, _)| !self.presence.contains(user))
                .map(|(user, c)| (user.clone(), self.last_seq.saturating_sub(c.seq))),
        );
        self.send_activity(RoomEventKind::Updated, recipients, push);
    }

    fn send_activity(
        &self,
        kind: RoomEventKind,
        recipients: Vec<(UserId, u64)>,
        push: Option<Arc<MessageNote>>,
    ) {
        if recipients.is_empty() {
            return;
        }
        let last = self.cache.newest().map(|m| MessageSummary {
            id: Id(m.id),
            from: m.from.to_string(),
            kind: m.kind,
            text: m.text.as_deref().map(summary_text),
            ts: m.ts,
        });
        self.group.do_send(RoomActivity {
            room: self.room_id.clone(),
            kind,
            last,
            recipients,
            push,
        });
    }

    /// What a push about `msg` says, when push is on.
    fn push_note(
        &self,
        msg: &StoredMessage,
        from_name: Option<String>,
    ) -> Option<Arc<MessageNote>> {
        if !self.deps.push.enabled() {
            return None;
        }
        Some(Arc::new(MessageNote {
            id: msg.id,
            from: msg.from.clone(),
            from_name,
            room_title: self.record.title.clone(),
            kind: msg.kind,
            preview: msg.text.as_deref().map(summary_text),
        }))
    }

    /// `user` has read the room up to `cursor` (their cursor moved over unread messages): their
    /// other devices learn it from a silent push.
    fn push_read(&mut self, user: &UserId, cursor: MessageId) {
        if !self.deps.push.enabled() {
            return;
        }
        self.push_stale = true;
        let unread = self.unread_of(user).unwrap_or(0);
        // Through the group, like the room's activity, so it keeps its order with it.
        self.group.do_send(MemberRead {
            room: self.room_id.clone(),
            user: user.clone(),
            cursor,
            unread,
        });
    }

    fn absent_members(&self) -> Vec<UserId> {
        self.members
            .users()
            .filter(|u| !self.presence.contains(u))
            .cloned()
            .collect()
    }

    fn sent_info(&self, id: MessageId, ts: i64, cmid: &str) -> SentInfo {
        SentInfo {
            group: self.group_id.clone(),
            room: self.room_id.clone(),
            id: Id(id),
            ts,
            unread: self.unread(id),
            cmid: cmid.to_owned(),
        }
    }

    /// Writes the moved cursors to the store in one batch.
    fn flush_cursors(&mut self, ctx: Option<&mut Context<Self>>) {
        let cursors = self.members.take_moved();
        if cursors.is_empty() {
            return;
        }
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let fut = async move {
            if let Err(e) = store.save_cursors(&group, &room, cursors).await {
                tracing::warn!(%group, %room, error = %e, "cursor flush failed");
            }
        };
        match ctx {
            Some(ctx) => {
                ctx.spawn(fut.into_actor(self));
            }
            // The actor is stopping: the write must outlive it.
            None => {
                actix::spawn(fut);
            }
        }
    }

    /// Releases durable messages at the front of the pending queue, in id order.
    fn release_pending(&mut self) {
        while let Some((pending, outcome)) = self.pending.pop_ready() {
            let Pending {
                msg,
                from_name,
                responder,
            } = pending;
            let cmid_key = msg.cmid.clone().map(|c| (msg.from.clone(), c));
            match outcome {
                Ok(AppendOutcome::Stored) => self.on_stored(msg, from_name, responder, cmid_key),
                Ok(AppendOutcome::Duplicate(first)) => {
                    let cmid = msg.cmid.as_deref().unwrap_or_default();
                    let info = self.sent_info(first.id, first.ts, cmid);
                    let waiters = cmid_key
                        .map(|k| self.cmids.finish(k, first.id, first.ts))
                        .unwrap_or_default();
                    self.answer_all(responder, waiters, Ok(info));
                }
                Err(e) => {
                    let waiters = cmid_key.map(|k| self.cmids.fail(&k)).unwrap_or_default();
                    self.answer_all(responder, waiters, Err(ChatError::from(e)));
                }
            }
        }
        if self.pending.is_empty() {
            // Nothing stamped is in flight: a seq burned by a failed or duplicate send is reused.
            self.next_seq = self.last_seq;
        }
    }

    /// Answers a send and the duplicates that waited for it.
    fn answer_all<T: super::WsReply + Clone>(
        &self,
        responder: Responder<T>,
        waiters: Vec<Responder<T>>,
        result: Result<T, ChatError>,
    ) {
        responder.respond(&self.group_id, &self.room_id, result.clone());
        for w in waiters {
            w.respond(&self.group_id, &self.room_id, result.clone());
        }
    }

    fn on_stored(
        &mut self,
        msg: StoredMessage,
        from_name: Option<String>,
        responder: Responder<SentInfo>,
        cmid_key: Option<CmidKey>,
    ) {
        let prev_last = self.last_id;
        self.last_id = msg.id;
        self.last_seq = msg.seq;
        metrics::counter!("chatnode_messages_stored_total").increment(1);
        // The sender and everyone present have now read it. A cursor that jumps over older
        // unread messages is announced, so clients can lower those counts.
        let readers = self.presence.users().chain(std::iter::once(&msg.from));
        let newest = Cursor {
            id: msg.id,
            seq: msg.seq,
        };
        for (user, from) in self.members.advance_to_newest(readers, newest, prev_last) {
            self.send_receipt(&user, from, prev_last);
            self.push_read(&user, msg.id);
        }
        let unread = self.unread(msg.id);
        let cmid = msg.cmid.clone().unwrap_or_default();
        let info = SentInfo {
            group: self.group_id.clone(),
            room: self.room_id.clone(),
            id: Id(msg.id),
            ts: msg.ts,
            unread,
            cmid,
        };
        let waiters = cmid_key
            .map(|k| self.cmids.finish(k, msg.id, msg.ts))
            .unwrap_or_default();
        self.answer_all(responder, waiters, Ok(info));
        let frame = ServerFrame::Msg {
            group: self.group_id.as_str(),
            room: self.room_id.as_str(),
            id: Id(msg.id),
            from: msg.from.as_str(),
            kind: msg.kind,
            text: msg.text.as_deref(),
            media: msg.media.as_ref(),
            ts: msg.ts,
            unread,
            cmid: msg.cmid.as_deref(),
        };
        metrics::histogram!("chatnode_fanout_size").record(self.sessions.len() as f64);
        self.broadcast(&frame, None);
        let push = self.push_note(&msg, from_name);
        self.cache.push(msg);
        self.notify_absent(push);
    }

    /// Writes the last cursors, answers the drain, and stops.
    fn finish_drain(&mut self, ctx: &mut Context<Self>) {
        let cursors = self.members.take_moved();
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        ctx.wait(
            async move {
                if !cursors.is_empty()
                    && let Err(e) = store.save_cursors(&group, &room, cursors).await
                {
                    tracing::warn!(%group, %room, error = %e, "final cursor flush failed");
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                for tx in act.drained.drain(..) {
                    let _ = tx.send(());
                }
                ctx.stop();
            }),
        );
    }

    fn check_member(&self, user: &UserId, service: bool) -> Result<(), ChatError> {
        if service || self.is_member(user) {
            Ok(())
        } else {
            Err(ChatError::not_member())
        }
    }

    /// Ends a connection's presence; announces the user's absence when it was their last.
    fn detach(&mut self, session: SessionId) {
        self.push_stale = true;
        let Some(handle) = self.sessions.remove(&session) else {
            return;
        };
        let user = handle.user().clone();
        if self.presence.leave(&user, session) {
            metrics::gauge!("chatnode_present_users").decrement(1.0);
            self.broadcast(
                &ServerFrame::Presence {
                    group: self.group_id.as_str(),
                    room: self.room_id.as_str(),
                    user: user.as_str(),
                    present: false,
                },
                None,
            );
        }
    }

    fn page_from_cache(&self, before: Option<MessageId>, limit: usize) -> Option<PageReply> {
        let (msgs, more) = self.cache.before(before, limit)?;
        let msgs = msgs.map(|m| self.out(m.clone())).collect();
        Some(PageReply { msgs, more })
    }

    fn after_from_cache(&self, since: MessageId, limit: usize) -> Option<PageReply> {
        let (msgs, more) = self.cache.after(since, limit, self.last_id)?;
        let msgs = msgs.map(|m| self.out(m.clone())).collect();
        Some(PageReply { msgs, more })
    }

    /// Answers a page request: from the cache when it holds the page (`cached`), otherwise
    /// from `read` on the store (given the store and the room's ids, cloned only on a miss),
    /// each message with its unread count as of the reply.
    fn reply_page<F: Future<Output = Result<Page, StoreError>> + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        responder: Responder<PageReply>,
        cached: Option<PageReply>,
        read: impl FnOnce(SharedStore, GroupId, RoomId) -> F,
    ) {
        if let Some(page) = cached {
            responder.respond(&self.group_id, &self.room_id, Ok(page));
            return;
        }
        let read = read(
            self.deps.store.clone(),
            self.group_id.clone(),
            self.room_id.clone(),
        );
        ctx.spawn(read.into_actor(self).map(move |res, act, _| {
            let res = res.map_err(ChatError::from).map(|page| PageReply {
                msgs: page.msgs.into_iter().map(|m| act.out(m)).collect(),
                more: page.more,
            });
            responder.respond(&act.group_id, &act.room_id, res);
        }));
    }

    fn finish_edit(
        &mut self,
        updated: StoredMessage,
        result: Result<(), StoreError>,
        responder: Responder<()>,
    ) {
        if let Err(e) = result {
            responder.respond(&self.group_id, &self.room_id, Err(e.into()));
            return;
        }
        if let Some(cached) = self.cache.get_mut(updated.id) {
            *cached = updated.clone();
        }
        responder.respond(&self.group_id, &self.room_id, Ok(()));
        if updated.deleted {
            self.broadcast(
                &ServerFrame::Deleted {
                    group: self.group_id.as_str(),
                    room: self.room_id.as_str(),
                    id: Id(updated.id),
                },
                None,
            );
        } else {
            self.broadcast(
                &ServerFrame::Edited {
                    group: self.group_id.as_str(),
                    room: self.room_id.as_str(),
                    id: Id(updated.id),
                    text: updated.text.as_deref().unwrap_or_default(),
                    edited: updated.edited.unwrap_or_default(),
                },
                None,
            );
        }
        if self.last_id == updated.id {
            let absent = self.absent_members();
            self.notify_group(absent, RoomEventKind::Updated);
        }
    }

    /// Deletes the objects of a media whose record is gone already, beside the actor and
    /// outliving it.
    fn remove_media_objects(&self, id: String) {
        let media = self.deps.media.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        actix::spawn(async move { media.delete_objects(&group, &room, &id).await });
    }

    /// Loads a message (cache first) and applies `change` to it, then stores and announces it.
    /// The room waits meanwhile, so an edit and a delete of one message never interleave.
    fn change_message(
        &mut self,
        id: MessageId,
        responder: Responder<()>,
        ctx: &mut Context<Self>,
        change: impl FnOnce(&StoredMessage) -> Result<StoredMessage, ChatError> + 'static,
    ) {
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let cached = self.cache.get(id).cloned();
        let fut = async move {
            let current = match cached {
                Some(m) => Some(m),
                None => store.get_message(&group, &room, id).await?,
            };
            let Some(current) = current else {
                return Ok(Err(ChatError::not_found("no such message")));
            };
            if current.deleted {
                return Ok(Err(ChatError::not_found("the message was deleted")));
            }
            let updated = match change(&current) {
                Ok(m) => m,
                Err(e) => return Ok(Err(e)),
            };
            // A media the message no longer carries is made unreachable before the reply: a
            // download looks its record up first, so the record goes now (and first, so a
            // failure leaves a message the client can delete again), the objects after.
            let removed_media = current.media.filter(|_| updated.media.is_none());
            if let Some(media) = &removed_media {
                store.delete_media(&media.id).await?;
            }
            let result = store.update_message(&group, &room, updated.clone()).await;
            Ok::<_, StoreError>(Ok((removed_media, updated, result)))
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok(Ok((removed_media, updated, result))) => {
                if result.is_ok()
                    && let Some(media) = removed_media
                {
                    act.remove_media_objects(media.id);
                }
                act.finish_edit(updated, result, responder)
            }
            Ok(Err(e)) => responder.respond(&act.group_id, &act.room_id, Err(e)),
            Err(e) => responder.respond(&act.group_id, &act.room_id, Err(e.into())),
        }));
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        metrics::gauge!("chatnode_active_rooms").increment(1.0);
        let flush_every = Duration::from_millis(self.deps.settings.rooms.cursor_flush_ms);
        ctx.run_interval(flush_every, |act, ctx| act.flush_cursors(Some(ctx)));
        let idle = Duration::from_secs(self.deps.settings.rooms.idle_secs.max(1));
        ctx.run_interval((idle / 4).max(Duration::from_millis(250)), move |act, ctx| {
            if act.sessions.is_empty()
                && act.pending.is_empty()
                && act.media_lookups.is_empty()
                && act.last_activity.elapsed() >= idle
            {
                tracing::debug!(group = %act.group_id, room = %act.room_id, "room idle, stopping");
                ctx.stop();
            }
        });
        // A room dies with its group, so a restarted group never finds two writers.
        let alive = self.group_alive.clone();
        ctx.spawn(
            async move { alive.cancelled().await }
                .into_actor(self)
                .map(|_, _act, ctx| ctx.stop()),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!("chatnode_active_rooms").decrement(1.0);
        self.flush_cursors(None);
        for pending in self.pending.drain() {
            pending
                .responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::unavailable()));
        }
        for (_, lookup) in self.media_lookups.drain() {
            lookup
                .responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::unavailable()));
        }
        metrics::gauge!("chatnode_present_users").decrement(self.presence.clear() as f64);
        // A room stops with connections present only when its group died (idle rooms have
        // none, deleted rooms drop theirs, a draining node closes them with 1001 itself):
        // end them, so their clients reconnect and recover instead of waiting in a dead room.
        if !self.closing {
            for session in self.sessions.values() {
                session.room_lost();
            }
        }
        self.group.do_send(RoomStopped {
            room: self.room_id.clone(),
            generation: self.generation,
        });
    }
}

impl Handler<Attach> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        let user = msg.session.user().clone();
        if let Err(e) = self.check_member(&user, msg.service) {
            msg.responder.respond(&self.group_id, &self.room_id, Err(e));
            return;
        }
        self.last_activity = Instant::now();
        let session_id = msg.session.id();
        self.push_stale = true;
        self.sessions.insert(session_id, msg.session);
        if self.presence.arrive(&user, session_id) {
            metrics::gauge!("chatnode_present_users").increment(1.0);
            self.broadcast(
                &ServerFrame::Presence {
                    group: self.group_id.as_str(),
                    room: self.room_id.as_str(),
                    user: user.as_str(),
                    present: true,
                },
                Some(session_id),
            );
        }
        let cursor_before = self.members.cursor(&user).map_or(0, |c| c.id);
        // The receipt goes out after the `entered` reply, so the new connection sees its reply
        // first and then the same events as everyone else.
        let receipt = self
            .advance_cursor(&user, self.last_id, self.last_seq)
            .map(|from| (user.clone(), from, self.last_id));
        if receipt.is_some() {
            self.push_read(&user, self.last_id);
        }
        let members = self.members.len() as u32;
        let present: Vec<String> = self.presence.users().map(|u| u.to_string()).collect();
        let limit = msg.limit;
        let page = match msg.since {
            None => self.page_from_cache(None, limit),
            Some(since) => self.after_from_cache(since, limit),
        };
        if let Some(PageReply { msgs, more }) = page {
            let reply = EnteredReply {
                latest: self.last_id,
                members,
                present,
                cursor: cursor_before,
                msgs,
                more,
            };
            msg.responder
                .respond(&self.group_id, &self.room_id, Ok(reply));
            if let Some((user, from, to)) = receipt {
                self.send_receipt(&user, from, to);
            }
            return;
        }
        // Older than the cache: read the store while the room waits, so that this connection
        // sees `entered` before any later `msg`.
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let since = msg.since;
        let responder = msg.responder;
        let fut = async move {
            match since {
                Some(since) => store.messages_after(&group, &room, since, limit).await,
                None => store.messages_before(&group, &room, None, limit).await,
            }
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(page) => {
                let msgs = page.msgs.into_iter().map(|m| act.out(m)).collect();
                let reply = EnteredReply {
                    latest: act.last_id,
                    members,
                    present,
                    cursor: cursor_before,
                    msgs,
                    more: page.more,
                };
                responder.respond(&act.group_id, &act.room_id, Ok(reply));
                if let Some((user, from, to)) = receipt {
                    act.send_receipt(&user, from, to);
                }
            }
            Err(e) => {
                responder.respond(&act.group_id, &act.room_id, Err(e.into()));
                if let Some((user, from, to)) = receipt {
                    act.send_receipt(&user, from, to);
                }
            }
        }));
    }
}

impl Handler<Detach> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        let was_present = self.sessions.contains_key(&msg.session);
        self.detach(msg.session);
        if was_present {
            // Cursors are always written on leave and disconnect.
            self.flush_cursors(Some(ctx));
        }
    }
}

impl Handler<PostMessage> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: PostMessage, ctx: &mut Self::Context) {
        if self.closing {
            msg.responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::unavailable()));
            return;
        }
        let author_ok = self.is_member(&msg.from) || (msg.service && !self.members.is_empty());
        if !author_ok {
            msg.responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::not_member()));
            return;
        }
        self.last_activity = Instant::now();
        let key = (msg.from.clone(), msg.cmid.clone());
        match self
            .cmids
            .lookup(&key, now_ms(), crate::store::IDEMPOTENCY_WINDOW_MS)
        {
            Seen::Done { id, ts } => {
                let info = self.sent_info(id, ts, &msg.cmid);
                msg.responder
                    .respond(&self.group_id, &self.room_id, Ok(info));
                return;
            }
            Seen::InFlight => {
                if let Err(responder) = self.cmids.wait(&key, msg.responder) {
                    responder.respond(&self.group_id, &self.room_id, Err(ChatError::unavailable()));
                }
                return;
            }
            Seen::New => {}
        }
        if msg.kind == MessageKind::Text {
            self.stamp(msg, None, ctx);
            return;
        }
        // A media message: its media must exist in this room, be the sender's and be of the
        // message's kind. The lookup is I/O, so it runs beside the actor; the message is
        // stamped when it returns. Duplicates of its cmid wait for it meanwhile.
        let Some(media_id) = msg.media.clone().filter(|m| is_media_id(m)) else {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::not_found("no such media")),
            );
            return;
        };
        self.cmids.start(key);
        let lookup = self.next_lookup;
        self.next_lookup += 1;
        self.media_lookups.insert(lookup, msg);
        let store = self.deps.store.clone();
        ctx.spawn(
            async move { store.get_media(&media_id).await }
                .into_actor(self)
                .map(move |result, act, ctx| act.on_media_found(lookup, result, ctx)),
        );
    }
}

impl RoomActor {
    /// Stamps a message with the next id and seq and hands it to the store; it is answered
    /// and broadcast when durable (`release_pending`).
    fn stamp(&mut self, msg: PostMessage, media: Option<MediaRef>, ctx: &mut Context<Self>) {
        let key = (msg.from.clone(), msg.cmid.clone());
        let id = self.deps.snowflake.next_id();
        self.next_seq += 1;
        let stored = StoredMessage {
            id,
            seq: self.next_seq,
            from: msg.from,
            kind: msg.kind,
            text: msg.text,
            media,
            ts: Snowflake::timestamp_ms(id).max(now_ms()),
            cmid: Some(msg.cmid),
            edited: None,
            deleted: false,
        };
        // A media message is in flight already (with any duplicates waiting on it).
        if !self.cmids.contains(&key) {
            self.cmids.start(key);
        }
        self.pending.push(
            id,
            Pending {
                msg: stored.clone(),
                from_name: msg.from_name,
                responder: msg.responder,
            },
        );
        // The first message of a wake-up schedules the hand-over. Actix polls spawned futures
        // only after the handlers of every message waiting in the mailbox have run, so the
        // messages stamped meanwhile join this one in the same store call.
        if self.to_store.is_empty() {
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| act.flush_to_store(ctx)));
        }
        self.to_store.push(stored);
    }

    /// Hands the stamped messages to the store as one call; each is released (answered and
    /// broadcast, in id order) when the call says it is durable.
    fn flush_to_store(&mut self, ctx: &mut Context<Self>) {
        let batch = std::mem::take(&mut self.to_store);
        if batch.is_empty() {
            return;
        }
        let ids: Vec<MessageId> = batch.iter().map(|m| m.id).collect();
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        ctx.spawn(
            async move { store.append_messages(&group, &room, batch).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.pending.complete(&ids, result);
                    act.release_pending();
                    act.maybe_finish_drain(ctx);
                }),
        );
    }

    /// A drain completes once nothing stamped or being looked up is in flight.
    fn maybe_finish_drain(&mut self, ctx: &mut Context<Self>) {
        if self.closing
            && self.pending.is_empty()
            && self.media_lookups.is_empty()
            && !self.drained.is_empty()
        {
            self.finish_drain(ctx);
        }
    }

    /// The media record of a media message arrived: stamp the message, or refuse it (and every
    /// duplicate that waited for it).
    fn on_media_found(
        &mut self,
        lookup: u64,
        result: Result<Option<MediaRecord>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(msg) = self.media_lookups.remove(&lookup) else {
            return;
        };
        let checked = if self.closing {
            Err(ChatError::unavailable())
        } else if !(self.is_member(&msg.from) || (msg.service && !self.members.is_empty())) {
            Err(ChatError::not_member())
        } else {
            result
                .map_err(ChatError::from)
                .and_then(|found| self.check_media(&msg, found))
        };
        match checked {
            Ok(media) => self.stamp(msg, Some(media), ctx),
            Err(e) => {
                let waiters = self.cmids.fail(&(msg.from.clone(), msg.cmid.clone()));
                self.answer_all(msg.responder, waiters, Err(e));
            }
        }
        self.maybe_finish_drain(ctx);
    }

    /// The rules of a media message: the media exists in this room (anything else is "no such
    /// media", so other rooms' ids reveal nothing), the sender uploaded it (a service may send
    /// any), and its type fits the message's kind.
    fn check_media(
        &self,
        msg: &PostMessage,
        found: Option<MediaRecord>,
    ) -> Result<MediaRef, ChatError> {
        let media = found
            .filter(|m| m.group == self.group_id && m.room == self.room_id)
            .ok_or_else(|| ChatError::not_found("no such media"))?;
        if !msg.service && media.uploader != msg.from {
            return Err(ChatError::forbidden(
                "only the uploader may send this media",
            ));
        }
        let kind = kind_of(&media.content_type);
        if kind != msg.kind {
            return Err(ChatError::bad_request(format!(
                "the media is a {} ({}), not a {}",
                kind.as_str(),
                media.content_type,
                msg.kind.as_str()
            )));
        }
        Ok(MediaRef {
            id: media.id,
            content_type: media.content_type,
            size: media.size,
            name: media.name,
            thumbnail: media.has_thumbnail,
        })
    }
}

impl Handler<MarkRead> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: MarkRead, ctx: &mut Self::Context) {
        if !self.is_member(&msg.user) {
            msg.responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::not_member()));
            return;
        }
        self.last_activity = Instant::now();
        // A cursor never passes the latest message: later messages must still count as unread.
        let target = msg.id.min(self.last_id);
        let current = self.members.cursor(&msg.user).map_or(0, |c| c.id);
        if target <= current {
            msg.responder.respond(&self.group_id, &self.room_id, Ok(()));
            return;
        }
        let apply = move |act: &mut Self, seq: u64, user: UserId, responder: Responder<()>| {
            if let Some(from) = act.advance_cursor(&user, target, seq) {
                act.send_receipt(&user, from, target);
                act.push_read(&user, target);
                act.notify_group(vec![user], RoomEventKind::Updated);
            }
            responder.respond(&act.group_id, &act.room_id, Ok(()));
        };
        if let Some(seq) = self.cache.seq_at(target) {
            apply(self, seq, msg.user, msg.responder);
            return;
        }
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let (user, responder) = (msg.user, msg.responder);
        ctx.wait(
            async move { store.message_at_or_before(&group, &room, target).await }
                .into_actor(self)
                .map(move |res, act, _| match res {
                    Ok(found) => apply(act, found.map_or(0, |m| m.seq), user, responder),
                    Err(e) => responder.respond(&act.group_id, &act.room_id, Err(e.into())),
                }),
        );
    }
}

impl Handler<GetHistory> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: GetHistory, ctx: &mut Self::Context) {
        if let Err(e) = self.check_member(&msg.user, msg.service) {
            msg.responder.respond(&self.group_id, &self.room_id, Err(e));
            return;
        }
        self.last_activity = Instant::now();
        let cached = self.page_from_cache(msg.before, msg.limit);
        let (before, limit) = (msg.before, msg.limit);
        self.reply_page(
            ctx,
            msg.responder,
            cached,
            move |store, group, room| async move {
                store.messages_before(&group, &room, before, limit).await
            },
        );
    }
}

impl Handler<GetAfter> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: GetAfter, ctx: &mut Self::Context) {
        if let Err(e) = self.check_member(&msg.user, msg.service) {
            msg.responder.respond(&self.group_id, &self.room_id, Err(e));
            return;
        }
        let cached = self.after_from_cache(msg.since, msg.limit);
        let (since, limit) = (msg.since, msg.limit);
        self.reply_page(
            ctx,
            msg.responder,
            cached,
            move |store, group, room| async move {
                store.messages_after(&group, &room, since, limit).await
            },
        );
    }
}

impl Handler<Typing> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Typing, _ctx: &mut Self::Context) {
        let user = msg.session.user().clone();
        if !self.sessions.contains_key(&msg.session.id()) && !self.is_member(&user) {
            msg.session.send(&ServerFrame::Err {
                r: msg.r,
                code: ErrorCode::Forbidden,
                message: "you are not a member of this room",
            });
            return;
        }
        if !self.presence.typed(&user, Instant::now()) {
            return;
        }
        self.broadcast_except_user(
            &ServerFrame::Typing {
                group: self.group_id.as_str(),
                room: self.room_id.as_str(),
                user: user.as_str(),
            },
            &user,
        );
    }
}

impl Handler<EditMessage> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: EditMessage, ctx: &mut Self::Context) {
        if !self.is_member(&msg.user) {
            msg.responder
                .respond(&self.group_id, &self.room_id, Err(ChatError::not_member()));
            return;
        }
        self.last_activity = Instant::now();
        let (user, text) = (msg.user, msg.text);
        self.change_message(msg.id, msg.responder, ctx, move |current| {
            if current.from != user {
                return Err(ChatError::forbidden("only the author may edit a message"));
            }
            if current.kind != MessageKind::Text {
                return Err(ChatError::bad_request("only text messages can be edited"));
            }
            Ok(StoredMessage {
                text: Some(text),
                edited: Some(now_ms()),
                ..current.clone()
            })
        });
    }
}

impl Handler<DeleteMessage> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteMessage, ctx: &mut Self::Context) {
        if let Err(e) = self.check_member(&msg.user, msg.service) {
            msg.responder.respond(&self.group_id, &self.room_id, Err(e));
            return;
        }
        self.last_activity = Instant::now();
        let allowed_all = msg.service || self.record.owner == msg.user;
        let user = msg.user;
        self.change_message(msg.id, msg.responder, ctx, move |current| {
            if !allowed_all && current.from != user {
                return Err(ChatError::forbidden(
                    "only the author or the room's owner may delete a message",
                ));
            }
            Ok(StoredMessage {
                text: None,
                media: None,
                deleted: true,
                ..current.clone()
            })
        });
    }
}

impl Handler<AddMember> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: AddMember, ctx: &mut Self::Context) {
        let allowed = if msg.join {
            self.record.kind == RoomKind::Open || msg.service
        } else {
            msg.service || self.record.owner == msg.caller
        };
        if !allowed {
            let why = if msg.join {
                "only open rooms can be joined"
            } else {
                "only the room's owner may add members"
            };
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::forbidden(why)),
            );
            return;
        }
        if self.is_member(&msg.user) {
            msg.responder.respond(&self.group_id, &self.room_id, Ok(()));
            return;
        }
        if self.record.kind == RoomKind::Direct && !msg.service {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::forbidden(
                    "direct rooms have exactly two members",
                )),
            );
            return;
        }
        if self
            .record
            .max
            .is_some_and(|max| self.members.len() as u32 >= max)
        {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::new(ErrorCode::RoomFull, "the room is full")),
            );
            return;
        }
        self.last_activity = Instant::now();
        // A member added later starts at the latest message: older ones never count them.
        let (cursor, cursor_seq) = (self.last_id, self.last_seq);
        self.insert_member(
            msg.user.clone(),
            Cursor {
                id: cursor,
                seq: cursor_seq,
            },
        );
        let record = MemberRecord {
            user: msg.user.clone(),
            cursor,
            cursor_seq,
            joined: now_ms(),
        };
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let (user, responder) = (msg.user, msg.responder);
        ctx.wait(
            async move { store.put_member(&group, &room, record).await }
                .into_actor(self)
                .map(move |res, act, _| match res {
                    Ok(()) => {
                        responder.respond(&act.group_id, &act.room_id, Ok(()));
                        let users = act.absent_members();
                        act.notify_group(users, RoomEventKind::Members);
                    }
                    Err(e) => {
                        act.drop_member(&user);
                        responder.respond(&act.group_id, &act.room_id, Err(e.into()));
                    }
                }),
        );
    }
}

impl Handler<RemoveMember> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveMember, ctx: &mut Self::Context) {
        let allowed = msg.service || msg.caller == msg.user || self.record.owner == msg.caller;
        if !allowed {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::forbidden(
                    "only the member themself or the room's owner may remove a member",
                )),
            );
            return;
        }
        if !self.is_member(&msg.user) {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::not_found("no such member")),
            );
            return;
        }
        self.last_activity = Instant::now();
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let (user, responder) = (msg.user, msg.responder);
        let store_user = user.clone();
        ctx.wait(
            async move { store.remove_member(&group, &room, &store_user).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    if let Err(e) = res {
                        responder.respond(&act.group_id, &act.room_id, Err(e.into()));
                        return;
                    }
                    // Leaving for good reads everything: one last receipt up to the latest id.
                    let cursor = act.members.cursor(&user).map_or(0, |c| c.id);
                    if cursor < act.last_id {
                        act.send_receipt(&user, cursor, act.last_id);
                    }
                    act.drop_member(&user);
                    for s in act.presence.sessions_of(&user) {
                        act.detach(s);
                    }
                    responder.respond(&act.group_id, &act.room_id, Ok(()));
                    let mut users = act.absent_members();
                    users.push(user);
                    act.notify_group(users, RoomEventKind::Members);
                }),
        );
    }
}

impl Handler<GetRoomInfo> for RoomActor {
    type Result = Result<RoomInfo, ChatError>;

    fn handle(&mut self, msg: GetRoomInfo, _ctx: &mut Self::Context) -> Self::Result {
        self.check_member(&msg.caller, msg.service)?;
        let mut members: Vec<UserId> = self.members.users().cloned().collect();
        members.sort();
        Ok(RoomInfo {
            record: self.record.clone(),
            members,
        })
    }
}

impl Handler<GetUnread> for RoomActor {
    type Result = Option<u64>;

    fn handle(&mut self, msg: GetUnread, _ctx: &mut Self::Context) -> Self::Result {
        self.unread_of(&msg.user)
    }
}

impl Handler<GetMembership> for RoomActor {
    type Result = Result<(), ChatError>;

    fn handle(&mut self, msg: GetMembership, _ctx: &mut Self::Context) -> Self::Result {
        self.check_member(&msg.user, msg.service)
    }
}

impl Handler<DeleteRoom> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteRoom, ctx: &mut Self::Context) {
        if !(msg.service || self.record.owner == msg.caller) {
            msg.responder.respond(
                &self.group_id,
                &self.room_id,
                Err(ChatError::forbidden("only the room's owner may delete it")),
            );
            return;
        }
        self.closing = true;
        let store = self.deps.store.clone();
        let (group, room) = (self.group_id.clone(), self.room_id.clone());
        let responder = msg.responder;
        ctx.wait(
            async move { store.delete_room(&group, &room).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    if let Err(e) = res {
                        act.closing = false;
                        responder.respond(&act.group_id, &act.room_id, Err(e.into()));
                        return;
                    }
                    act.broadcast(
                        &ServerFrame::Room {
                            group: act.group_id.as_str(),
                            room: act.room_id.as_str(),
                            kind: RoomEventKind::Deleted,
                            last: None,
                            unread: None,
                        },
                        None,
                    );
                    let users: Vec<UserId> = act.members.users().cloned().collect();
                    metrics::gauge!("chatnode_present_users")
                        .decrement(act.presence.clear() as f64);
                    act.notify_group(users, RoomEventKind::Deleted);
                    act.members = Members::default();
                    act.sessions.clear();
                    responder.respond(&act.group_id, &act.room_id, Ok(()));
                    // The store deleted the media records with the room; the objects go too.
                    let media = act.deps.media.clone();
                    let (group, room) = (act.group_id.clone(), act.room_id.clone());
                    actix::spawn(async move { media.remove_room(&group, &room).await });
                    ctx.stop();
                }),
        );
    }
}

impl Handler<Drain> for RoomActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.closing = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drained.push(tx);
        if self.pending.is_empty() && self.media_lookups.is_empty() {
            self.finish_drain(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
