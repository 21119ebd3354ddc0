//! `GroupActor`: one per group (namespace) on this node.
//!
//! It owns the registry of the group's active rooms, loads a room from the store the first time
//! someone asks for it (concurrent askers wait for the same load), and starts its
//! [`RoomActor`] on this arbiter. It also holds the group's subscribed connections (`sub`) and
//! forwards `room` events from its rooms to those of them whose users are members of the room
//! and not present in it: the chat list's live badge.
//!
//! Started by the [`NodeSupervisor`](super::supervisor::NodeSupervisor); stops when it has had
//! no room and no subscriber for `rooms.group_idle_secs`. If it dies (a panic), its rooms stop
//! with it (they watch `alive`) and the supervisor starts a fresh one that reloads them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::ActorDeps;
use super::room::{Drain as DrainRoom, GetUnread, RoomActor, RoomStart};
use super::supervisor::{GroupStopped, NodeSupervisor};
use crate::error::ChatError;
use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::ServerFrame;
use crate::protocol::frame::{MessageSummary, RoomEventKind};
use crate::push::MessageNote;
use crate::session::handle::{SessionHandle, SessionId};

// ---------------------------------------------------------------------------------------------
// The actor's API.

/// Finds (loading if needed) a room's actor.
#[derive(Message)]
#[rtype(result = "Result<Addr<RoomActor>, ChatError>")]
pub struct ResolveRoom {
    pub room: RoomId,
}

/// The chat list's live part: a user's unread counts in those of `rooms` that are active
/// (their actors hold cursors newer than the store's). Rooms not active here are left out:
/// their cursors in the store are current.
#[derive(Message)]
#[rtype(result = "HashMap<RoomId, u64>")]
pub struct LiveUnread {
    pub user: UserId,
    pub rooms: Vec<RoomId>,
}

/// A connection subscribes to the group's `room` events (`sub`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub session: SessionHandle,
}

/// A connection unsubscribes (`unsub`, or the connection ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
    pub user: UserId,
}

/// From a room: these members (not present in it) should hear about a change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomActivity {
    pub room: RoomId,
    pub kind: RoomEventKind,
    pub last: Option<MessageSummary>,
    /// Each recipient with their unread count in the room.
    pub recipients: Vec<(UserId, u64)>,
    /// A new message, when push is on: recipients without a subscribed connection (and not
    /// its sender) get a push about it.
    pub push: Option<Arc<MessageNote>>,
}

/// From a room, instead of a [`RoomActivity`] for a new message: the same members are away
/// as in its last one (nobody subscribed, nothing changed), so push only counts one more
/// message for them. It comes through the group so that it never overtakes that activity.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MoreActivity {
    pub room: RoomId,
    pub note: Arc<MessageNote>,
}

/// From a room: a member's cursor skipped unread messages (they read the room somewhere); with
/// push on, their devices get a silent notice. Through the group to keep its order with
/// [`RoomActivity`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct MemberRead {
    pub room: RoomId,
    pub user: UserId,
    pub cursor: MessageId,
    /// Their unread count in the room after the move.
    pub unread: u64,
}

/// From a room: it stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomStopped {
    pub room: RoomId,
    pub generation: u64,
}

/// A room was created elsewhere (REST): its members who are subscribed hear `created`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomCreated {
    pub room: RoomId,
    pub members: Vec<UserId>,
}

/// Stops every room (flushing their cursors) and then the group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Test hook: makes the actor panic, to exercise supervision.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

// ---------------------------------------------------------------------------------------------
// The actor.

struct RoomEntry {
    addr: Addr<RoomActor>,
    generation: u64,
}

type Waiter = oneshot::Sender<Result<Addr<RoomActor>, ChatError>>;

pub struct GroupActor {
    deps: ActorDeps,
    group_id: GroupId,
    supervisor: Addr<NodeSupervisor>,
    generation: u64,
    /// Cancelled when this actor goes away, for any reason: its rooms stop with it.
    alive: CancellationToken,
    rooms: HashMap<RoomId, RoomEntry>,
    loading: HashMap<RoomId, Vec<Waiter>>,
    next_room_generation: u64,
    subscribers: HashMap<UserId, Vec<SessionHandle>>,
    subscriber_count: Arc<AtomicUsize>,
    idle_since: Option<Instant>,
}

impl GroupActor {
    pub fn new(
        deps: ActorDeps,
        group_id: GroupId,
        supervisor: Addr<NodeSupervisor>,
        generation: u64,
        alive: CancellationToken,
    ) -> Self {
        Self {
            deps,
            group_id,
            supervisor,
            generation,
            alive,
            rooms: HashMap::new(),
            loading: HashMap::new(),
            next_room_generation: 0,
            subscribers: HashMap::new(),
            subscriber_count: Arc::new(AtomicUsize::new(0)),
            idle_since: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.rooms.is_empty() && self.loading.is_empty() && self.subscribers.is_empty()
    }

    fn touch(&mut self) {
        self.idle_since = if self.is_idle() {
            Some(self.idle_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
    }

    fn load_room(&mut self, room: RoomId, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        let group = self.group_id.clone();
        let recent = self.deps.settings.rooms.cache_messages;
        let room_for_load = room.clone();
        ctx.spawn(
            async move { store.load_room(&group, &room_for_load, recent).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let waiters = act.loading.remove(&room).unwrap_or_default();
                    let result = match res {
                        Ok(Some(loaded)) => {
                            act.next_room_generation += 1;
                            let start = RoomStart {
                                deps: act.deps.clone(),
                                loaded,
                                group: ctx.address(),
                                group_alive: act.alive.clone(),
                                generation: act.next_room_generation,
                                group_subscribers: act.subscriber_count.clone(),
                            };
                            let addr = RoomActor::new(start).start();
                            act.rooms.insert(
                                room.clone(),
                                RoomEntry {
                                    addr: addr.clone(),
                                    generation: act.next_room_generation,
                                },
                            );
                            Ok(addr)
                        }
                        Ok(None) => Err(ChatError::no_room()),
                        Err(e) => Err(ChatError::from(e)),
                    };
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                    act.touch();
                }),
        );
    }

    /// Whether `user` has a live connection subscribed to the group.
    fn is_subscribed(&self, user: &UserId) -> bool {
        self.subscribers
            .get(user)
            .is_some_and(|sessions| sessions.iter().any(|s| !s.is_closed()))
    }

    fn send_room_event(
        &self,
        room: &RoomId,
        kind: RoomEventKind,
        last: Option<&MessageSummary>,
        user: &UserId,
        unread: Option<u64>,
    ) {
        let Some(sessions) = self.subscribers.get(user) else {
            return;
        };
        let frame = ServerFrame::Room {
            group: self.group_id.as_str(),
            room: room.as_str(),
            kind,
            last,
            unread,
        };
        for session in sessions {
            session.send(&frame);
        }
        metrics::counter!("chatnode_frames_out_total", "type" => "room")
            .increment(sessions.len() as u64);
    }
}

impl Drop for GroupActor {
    fn drop(&mut self) {
        self.alive.cancel();
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        metrics::gauge!("chatnode_active_groups").increment(1.0);
        self.touch();
        let idle = Duration::from_secs(self.deps.settings.rooms.group_idle_secs.max(1));
        ctx.run_interval(
            (idle / 4).max(Duration::from_millis(250)),
            move |act, ctx| {
                act.subscribers.retain(|_, sessions| {
                    sessions.retain(|s| !s.is_closed());
                    !sessions.is_empty()
                });
                act.subscriber_count
                    .store(act.subscribers.len(), Ordering::Relaxed);
                act.touch();
                if act.idle_since.is_some_and(|since| since.elapsed() >= idle) {
                    ctx.stop();
                }
            },
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!("chatnode_active_groups").decrement(1.0);
        self.alive.cancel();
        self.supervisor.do_send(GroupStopped {
            group: self.group_id.clone(),
            generation: self.generation,
        });
    }
}

impl Handler<ResolveRoom> for GroupActor {
    type Result = ResponseFuture<Result<Addr<RoomActor>, ChatError>>;

    fn handle(&mut self, msg: ResolveRoom, ctx: &mut Self::Context) -> Self::Result {
        if let Some(entry) = self.rooms.get(&msg.room) {
            if entry.addr.connected() {
                let addr = entry.addr.clone();
                return Box::pin(async move { Ok(addr) });
            }
            self.rooms.remove(&msg.room);
        }
        let (tx, rx) = oneshot::channel();
        let first = !self.loading.contains_key(&msg.room);
        self.loading.entry(msg.room.clone()).or_default().push(tx);
        if first {
            self.load_room(msg.room, ctx);
        }
        self.touch();
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ChatError::unavailable())) })
    }
}

impl Handler<Subscribe> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        let sessions = self
            .subscribers
            .entry(msg.session.user().clone())
            .or_default();
        if !sessions.iter().any(|s| s.id() == msg.session.id()) {
            sessions.push(msg.session);
        }
        self.subscriber_count
            .store(self.subscribers.len(), Ordering::Relaxed);
        self.touch();
    }
}

impl Handler<Unsubscribe> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Self::Context) {
        if let Some(sessions) = self.subscribers.get_mut(&msg.user) {
            sessions.retain(|s| s.id() != msg.session);
            if sessions.is_empty() {
                self.subscribers.remove(&msg.user);
            }
        }
        self.subscriber_count
            .store(self.subscribers.len(), Ordering::Relaxed);
        self.touch();
    }
}

impl Handler<RoomActivity> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: RoomActivity, _ctx: &mut Self::Context) {
        // With push on, rooms send activity even when nobody is subscribed: then skip the loop.
        if !self.subscribers.is_empty() {
            for (user, unread) in &msg.recipients {
                let unread = (msg.kind != RoomEventKind::Deleted).then_some(*unread);
                self.send_room_event(&msg.room, msg.kind, msg.last.as_ref(), user, unread);
            }
        }
        if let Some(note) = msg.push {
            // Whoever has a connection subscribed hears it live; the rest are pushed.
            let mut away = msg.recipients;
            if self.subscribers.is_empty() {
                away.retain(|(user, _)| *user != note.from);
            } else {
                away.retain(|(user, _)| *user != note.from && !self.is_subscribed(user));
            }
            if !away.is_empty() {
                self.deps
                    .push
                    .absent(self.group_id.clone(), msg.room, note, away);
            }
        }
    }
}

impl Handler<MoreActivity> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: MoreActivity, _ctx: &mut Self::Context) {
        self.deps
            .push
            .more(self.group_id.clone(), msg.room, msg.note);
    }
}

impl Handler<MemberRead> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: MemberRead, _ctx: &mut Self::Context) {
        self.deps.push.read(
            self.group_id.clone(),
            msg.room,
            msg.user,
            msg.cursor,
            msg.unread,
        );
    }
}

impl Handler<RoomCreated> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: RoomCreated, _ctx: &mut Self::Context) {
        for user in &msg.members {
            self.send_room_event(&msg.room, RoomEventKind::Created, None, user, Some(0));
        }
    }
}

impl Handler<RoomStopped> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: RoomStopped, _ctx: &mut Self::Context) {
        if self
            .rooms
            .get(&msg.room)
            .is_some_and(|e| e.generation == msg.generation)
        {
            self.rooms.remove(&msg.room);
        }
        self.touch();
    }
}

impl Handler<LiveUnread> for GroupActor {
    type Result = ResponseFuture<HashMap<RoomId, u64>>;

    fn handle(&mut self, msg: LiveUnread, _ctx: &mut Self::Context) -> Self::Result {
        let asks: Vec<(RoomId, Addr<RoomActor>)> = msg
            .rooms
            .into_iter()
            .filter_map(|room| self.rooms.get(&room).map(|e| (room, e.addr.clone())))
            .collect();
        let user = msg.user;
        Box::pin(async move {
            let replies = futures_util::future::join_all(asks.into_iter().map(|(room, addr)| {
                let ask = addr.send(GetUnread { user: user.clone() });
                async move { (room, ask.await) }
            }))
            .await;
            replies
                .into_iter()
                .filter_map(|(room, reply)| Some((room, reply.ok()??)))
                .collect()
        })
    }
}

impl Handler<Drain> for GroupActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let rooms: Vec<Addr<RoomActor>> = self.rooms.values().map(|e| e.addr.clone()).collect();
        Box::pin(
            async move {
                for room in rooms {
                    let _ = room.send(DrainRoom).await;
                }
            }
            .into_actor(self)
            .map(|_, _act, ctx| ctx.stop()),
        )
    }
}

#[cfg(test)]
impl Handler<Crash> for GroupActor {
    type Result = ();

    #[allow(clippy::panic)]
    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("crash requested by a test");
    }
}
