//! `PushActor`: turns "these members are away" into FCM pushes, one per (user, room) and
//! coalescing window.
//!
//! It owns three bounded queues, each emptied in order:
//! 1. **Coalescing**: one entry per (user, room), due one window (`push.coalesce_ms`) after its
//!    first message. Later messages of the window only count up and replace the preview, so a
//!    burst of 50 messages becomes one push "50 new messages: <latest>". A read on any device
//!    (`NotifyRead`) turns the entry into a silent data push for the user's other devices.
//! 2. **Lookups**: due entries of one room, waiting for the store to say who muted the room and
//!    which devices each user has (at most [`LOOKUP_CONCURRENCY`] lookups at once, on the
//!    store's own threads).
//! 3. **Deliveries**: one FCM request per device, at most `push.concurrency` in flight over one
//!    pooled HTTP client and at most `push.max_rate` started per second (evenly paced), each
//!    retried by [`FcmClient::send`].
//!
//! Each queue holds at most `push.max_pending` items; a full queue drops its oldest work first
//! and counts it (`chatnode_push_dropped_total`). Nothing here can slow a room down: rooms and
//! groups reach this actor with `try_send` only, and it runs on a thread of its own.
//!
//! Started by `push::start` when a key file is configured; stops with the node. Talks to the
//! store (devices, mutes; deletes a device FCM calls unregistered) and to FCM.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::MessageNote;
use super::fcm::{Alert, FcmClient, Outcome, alert_body, silent_body};
use crate::config::PushSettings;
use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::MessageKind;
use crate::protocol::frame::summary_text;
use crate::store::{SharedStore, StoreError, token_digest};

/// Store lookups in flight at once.
pub const LOOKUP_CONCURRENCY: usize = 4;
/// Users per lookup.
const LOOKUP_BATCH: usize = 500;
/// Messages the mailbox holds before `try_send` refuses (and the push is dropped).
const MAILBOX: usize = 4096;

// ---------------------------------------------------------------------------------------------
// The actor's API.

/// From a group: a new message, for members who are neither present nor subscribed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyAbsent {
    pub group: GroupId,
    pub room: RoomId,
    pub note: Arc<MessageNote>,
    /// Each recipient with their unread count in the room.
    pub recipients: Vec<(UserId, u64)>,
}

/// From a room (through its group, so it never overtakes that list): one more message for
/// exactly the recipients of the room's last
/// [`NotifyAbsent`], each with one more unread message per `NotifyMore` since. The room sends
/// it instead of the full list while nothing changed (same sender, nobody subscribed, no
/// presence, membership or cursor change) within [`super::list_reuse`] of that list, so the
/// messages of a large room cost the room O(1) each, not a walk over its members per window.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyMore {
    pub group: GroupId,
    pub room: RoomId,
    pub note: Arc<MessageNote>,
}

/// From a room (through its group): a member's read cursor moved (they read the room on some
/// device).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyRead {
    pub group: GroupId,
    pub room: RoomId,
    pub user: UserId,
    pub cursor: MessageId,
    /// Their unread count in the room after the move.
    pub unread: u64,
}

/// Sends everything now, without waiting for windows to end; answers when nothing is left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Internal: a lookup finished.
#[derive(Message)]
#[rtype(result = "()")]
struct LookedUp {
    items: usize,
    result: Result<Vec<Delivery>, StoreError>,
}

/// Internal: a delivery finished.
#[derive(Message)]
#[rtype(result = "()")]
struct Delivered {
    outcome: Outcome,
}

// ---------------------------------------------------------------------------------------------
// The actor.

type Key = (UserId, GroupId, RoomId);

/// What a (user, room) is waiting for.
#[derive(Debug, Clone)]
enum Work {
    Message {
        count: u32,
        note: Arc<MessageNote>,
        unread: u64,
    },
    Read {
        cursor: MessageId,
        unread: u64,
    },
}

struct Coalesced {
    due: Instant,
    work: Work,
}

/// A room's last full list of recipients, for [`NotifyMore`].
struct LastList {
    recipients: Vec<(UserId, u64)>,
    /// `NotifyMore`s since the list came.
    more: u64,
    at: Instant,
}

/// Due work of one room, waiting for its devices and mutes.
struct Lookup {
    group: GroupId,
    room: RoomId,
    items: Vec<(UserId, Work)>,
}

/// One FCM request to make.
/// Its body is rendered only when it is sent, so a large room's pushes do not all sit in memory
/// as bodies at once.
struct Delivery {
    user: UserId,
    token: String,
    what: Arc<Rendering>,
}

/// What the deliveries of one (user, room) share.
struct Rendering {
    group: GroupId,
    room: RoomId,
    collapse_key: Arc<str>,
    work: Work,
}

impl Delivery {
    fn body(&self) -> Bytes {
        let r = &self.what;
        render(&r.group, &r.room, &r.collapse_key, &r.work, &self.token)
    }
}

pub struct PushActor {
    store: SharedStore,
    client: Arc<FcmClient>,
    window: Duration,
    max_pending: usize,
    concurrency: usize,
    coalescing: HashMap<Key, Coalesced>,
    /// Each room's last full list (kept a minute beyond [`super::list_reuse`]).
    lists: HashMap<(GroupId, RoomId), LastList>,
    /// The coalescing entries in the order they fall due (= the order they were created).
    order: VecDeque<(Instant, Key)>,
    lookups: VecDeque<Lookup>,
    /// Items in `lookups`.
    lookup_items: usize,
    lookups_in_flight: usize,
    deliveries: VecDeque<Delivery>,
    sending: usize,
    /// Deliveries per second at most (0: no limit), as a token bucket of 50 ms of them.
    rate: f64,
    tokens: f64,
    refilled: Instant,
    /// A wake-up is scheduled for when the bucket has a token again.
    paced: bool,
    /// Set by `Flush`: windows are not waited for any more.
    flushing: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl PushActor {
    pub fn new(store: SharedStore, client: Arc<FcmClient>, settings: &PushSettings) -> Self {
        Self {
            store,
            client,
            window: Duration::from_millis(settings.coalesce_ms),
            max_pending: settings.max_pending.max(1),
            concurrency: settings.concurrency.max(1),
            coalescing: HashMap::new(),
            lists: HashMap::new(),
            order: VecDeque::new(),
            lookups: VecDeque::new(),
            lookup_items: 0,
            lookups_in_flight: 0,
            deliveries: VecDeque::new(),
            sending: 0,
            rate: f64::from(settings.max_rate),
            tokens: 1.0,
            refilled: Instant::now(),
            paced: false,
            flushing: false,
            idle_waiters: Vec::new(),
        }
    }

    /// Starts a window for `key`, dropping the oldest entry when the queue is full.
    fn open(&mut self, key: Key, work: Work) {
        while self.coalescing.len() >= self.max_pending {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.coalescing.remove(&oldest).is_some() {
                metrics::counter!("chatnode_push_dropped_total", "reason" => "queue_full")
                    .increment(1);
            }
        }
        let due = Instant::now() + self.window;
        self.order.push_back((due, key.clone()));
        self.coalescing.insert(key, Coalesced { due, work });
    }

    /// A new message for `recipients`, whose unread counts are `extra` higher than listed.
    fn alert(
        &mut self,
        group: &GroupId,
        room: &RoomId,
        note: &Arc<MessageNote>,
        recipients: &[(UserId, u64)],
        extra: u64,
    ) {
        for (user, unread) in recipients {
            let unread = unread + extra;
            let key = (user.clone(), group.clone(), room.clone());
            match self.coalescing.get_mut(&key) {
                Some(entry) => match &mut entry.work {
                    Work::Message {
                        count,
                        note: latest,
                        unread: pending,
                    } => {
                        *count = count.saturating_add(1);
                        *latest = note.clone();
                        *pending = unread;
                    }
                    Work::Read { .. } => {
                        entry.work = Work::Message {
                            count: 1,
                            note: note.clone(),
                            unread,
                        };
                    }
                },
                None => self.open(
                    key,
                    Work::Message {
                        count: 1,
                        note: note.clone(),
                        unread,
                    },
                ),
            }
        }
    }

    /// Moves due entries (all of them when flushing) to the lookup queue, grouped by room.
    fn release_due(&mut self, now: Instant) {
        let mut by_room: HashMap<(GroupId, RoomId), Vec<(UserId, Work)>> = HashMap::new();
        while let Some((due, _)) = self.order.front() {
            if !self.flushing && *due > now {
                break;
            }
            let Some((due, key)) = self.order.pop_front() else {
                break;
            };
            // An entry is only ever removed from the front, so this is always the same one.
            if self.coalescing.get(&key).is_some_and(|e| e.due == due)
                && let Some(entry) = self.coalescing.remove(&key)
            {
                let (user, group, room) = key;
                by_room
                    .entry((group, room))
                    .or_default()
                    .push((user, entry.work));
            }
        }
        for ((group, room), items) in by_room {
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<(UserId, Work)> = items.by_ref().take(LOOKUP_BATCH).collect();
                self.enqueue_lookup(Lookup {
                    group: group.clone(),
                    room: room.clone(),
                    items: chunk,
                });
            }
        }
    }

    fn enqueue_lookup(&mut self, lookup: Lookup) {
        self.lookup_items += lookup.items.len();
        self.lookups.push_back(lookup);
        while self.lookup_items > self.max_pending {
            let Some(oldest) = self.lookups.pop_front() else {
                break;
            };
            self.lookup_items -= oldest.items.len();
            metrics::counter!("chatnode_push_dropped_total", "reason" => "queue_full")
                .increment(oldest.items.len() as u64);
        }
    }

    fn enqueue_deliveries(&mut self, deliveries: Vec<Delivery>) {
        self.deliveries.extend(deliveries);
        let over = self.deliveries.len().saturating_sub(self.max_pending);
        if over > 0 {
            self.deliveries.drain(..over);
            metrics::counter!("chatnode_push_dropped_total", "reason" => "queue_full")
                .increment(over as u64);
        }
    }

    /// Starts lookups and deliveries while there is room for them.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.lookups_in_flight < LOOKUP_CONCURRENCY {
            let Some(lookup) = self.lookups.pop_front() else {
                break;
            };
            self.lookup_items -= lookup.items.len();
            self.lookups_in_flight += 1;
            let items = lookup.items.len();
            let store = self.store.clone();
            let addr = ctx.address();
            // A task of its own (not a context future): many of them are polled independently.
            actix::spawn(async move {
                let result = resolve(store, lookup).await;
                addr.do_send(LookedUp { items, result });
            });
        }
        while self.sending < self.concurrency && !self.deliveries.is_empty() {
            if !self.take_token(ctx) {
                break;
            }
            let Some(delivery) = self.deliveries.pop_front() else {
                break;
            };
            self.sending += 1;
            let client = self.client.clone();
            let store = self.store.clone();
            let addr = ctx.address();
            actix::spawn(async move {
                let outcome = client.send(delivery.body()).await;
                if outcome == Outcome::TokenInvalid {
                    tracing::info!(
                        user = %delivery.user,
                        device = %token_digest(&delivery.token),
                        "FCM no longer knows this device; deleting it"
                    );
                    if let Err(e) = store.delete_device(&delivery.user, &delivery.token).await {
                        tracing::warn!(error = %e, "deleting an unregistered device failed");
                    }
                }
                addr.do_send(Delivered { outcome });
            });
        }
        self.report();
    }

    /// Takes a token from the pacing bucket; without one, schedules a pump for when there is.
    fn take_token(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let capacity = (self.rate * 0.05).max(1.0);
        self.tokens = (self.tokens + self.rate * now.duration_since(self.refilled).as_secs_f64())
            .min(capacity);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        if !self.paced {
            self.paced = true;
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
                .max(Duration::from_millis(1));
            ctx.run_later(wait, |act, ctx| {
                act.paced = false;
                act.pump(ctx);
            });
        }
        false
    }

    fn report(&mut self) {
        let pending = self.coalescing.len() + self.lookup_items + self.deliveries.len();
        metrics::gauge!("chatnode_push_pending").set(pending as f64);
        let idle = pending == 0 && self.lookups_in_flight == 0 && self.sending == 0;
        if idle {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Looks up who muted the room and everyone's devices, and builds one request per device.
async fn resolve(store: SharedStore, lookup: Lookup) -> Result<Vec<Delivery>, StoreError> {
    let Lookup { group, room, items } = lookup;
    let alerted: Vec<UserId> = items
        .iter()
        .filter(|(_, work)| matches!(work, Work::Message { .. }))
        .map(|(user, _)| user.clone())
        .collect();
    let muted = if alerted.is_empty() {
        Default::default()
    } else {
        store.muted_among(&group, &room, &alerted).await?
    };
    let mut wanted: HashMap<UserId, Work> = HashMap::with_capacity(items.len());
    let mut users = Vec::with_capacity(items.len());
    let mut skipped_muted = 0u64;
    for (user, work) in items {
        // A muted room makes no noise; a silent read notice still keeps badges right.
        if matches!(work, Work::Message { .. }) && muted.contains(&user) {
            skipped_muted += 1;
            continue;
        }
        users.push(user.clone());
        wanted.insert(user, work);
    }
    metrics::counter!("chatnode_push_skipped_total", "reason" => "muted").increment(skipped_muted);
    let with_devices = store.devices_of(&users).await?;
    metrics::counter!("chatnode_push_skipped_total", "reason" => "no_device")
        .increment((users.len() - with_devices.len()) as u64);
    let collapse_key: Arc<str> = room_key(&group, &room).into();
    let mut deliveries = Vec::new();
    for (user, devices) in with_devices {
        let Some(work) = wanted.remove(&user) else {
            continue;
        };
        let what = Arc::new(Rendering {
            group: group.clone(),
            room: room.clone(),
            collapse_key: collapse_key.clone(),
            work,
        });
        for device in devices {
            deliveries.push(Delivery {
                user: user.clone(),
                token: device.token,
                what: what.clone(),
            });
        }
    }
    Ok(deliveries)
}

/// The request body for one device.
fn render(group: &GroupId, room: &RoomId, collapse_key: &str, work: &Work, token: &str) -> Bytes {
    match work {
        Work::Message {
            count,
            note,
            unread,
        } => {
            let (title, body) = alert_text(note, *count);
            let (id, unread, count) = (note.id.to_string(), unread.to_string(), count.to_string());
            alert_body(
                token,
                &Alert {
                    title: &title,
                    body: &body,
                    data: &[
                        ("type", "message"),
                        ("group", group.as_str()),
                        ("room", room.as_str()),
                        ("message_id", &id),
                        // Not `from`: FCM reserves it (and `message_type`, `google*`,
                        // `gcm*`) and refuses the whole request.
                        ("sender", note.from.as_str()),
                        ("unread", &unread),
                        ("count", &count),
                    ],
                    collapse_key,
                },
            )
        }
        Work::Read { cursor, unread } => {
            let (cursor, unread) = (cursor.to_string(), unread.to_string());
            silent_body(
                token,
                &[
                    ("type", "read"),
                    ("group", group.as_str()),
                    ("room", room.as_str()),
                    ("cursor", &cursor),
                    // The same id under the name older apps read.
                    ("message_id", &cursor),
                    ("unread", &unread),
                ],
                collapse_key,
            )
        }
    }
}

/// A notification's title and body: the sender's name (or the room's title), and the
/// preview, with the count in front when the window held more than one message. Both are cut
/// to [`SUMMARY_TEXT_CHARS`](crate::protocol::frame::SUMMARY_TEXT_CHARS) characters: a display name comes from the token unbounded, and FCM
/// refuses a request whose data and notification exceed 4096 bytes.
pub fn alert_text(note: &MessageNote, count: u32) -> (String, String) {
    let title = summary_text(
        note.from_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&note.room_title),
    );
    let preview = match note.kind {
        MessageKind::Text => note.preview.as_deref().unwrap_or_default(),
        MessageKind::Image => "Photo",
        MessageKind::Video => "Video",
        MessageKind::File => "File",
    };
    let body = if count > 1 {
        format!("{count} new messages: {preview}")
    } else {
        preview.to_owned()
    };
    (title, body)
}

/// The room's key for collapsing notifications: `group/room`, or a digest of it when that is
/// longer than APNs allows for `apns-collapse-id` (64 bytes).
pub fn room_key(group: &GroupId, room: &RoomId) -> String {
    let key = format!("{group}/{room}");
    if key.len() <= 64 {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    format!("room-{}", hex::encode(&digest[..16]))
}

impl Actor for PushActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let tick = (self.window / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let keep = super::list_reuse(self.window) + Duration::from_secs(60);
        ctx.run_interval(tick, move |act, ctx| {
            let now = Instant::now();
            act.release_due(now);
            act.lists
                .retain(|_, list| now.duration_since(list.at) < keep);
            act.pump(ctx);
        });
    }
}

impl Handler<NotifyAbsent> for PushActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyAbsent, _ctx: &mut Self::Context) {
        self.alert(&msg.group, &msg.room, &msg.note, &msg.recipients, 0);
        self.lists.insert(
            (msg.group, msg.room),
            LastList {
                recipients: msg.recipients,
                more: 0,
                at: Instant::now(),
            },
        );
    }
}

impl Handler<NotifyMore> for PushActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyMore, _ctx: &mut Self::Context) {
        let key = (msg.group, msg.room);
        let Some(mut list) = self.lists.remove(&key) else {
            // The list is gone (the mailbox lagged more than a minute behind): lost.
            metrics::counter!("chatnode_push_dropped_total", "reason" => "late").increment(1);
            return;
        };
        list.more += 1;
        self.alert(&key.0, &key.1, &msg.note, &list.recipients, list.more);
        self.lists.insert(key, list);
    }
}

impl Handler<NotifyRead> for PushActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyRead, _ctx: &mut Self::Context) {
        let key = (msg.user, msg.group, msg.room);
        let read = Work::Read {
            cursor: msg.cursor,
            unread: msg.unread,
        };
        match self.coalescing.get_mut(&key) {
            Some(entry) => match &mut entry.work {
                // Still unread messages: the alert stays, with the lower count.
                Work::Message { unread, .. } if msg.unread > 0 => *unread = msg.unread,
                // All read: the alert is moot; the other devices learn it silently.
                _ => entry.work = read,
            },
            None => self.open(key, read),
        }
    }
}

impl Handler<Flush> for PushActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        self.flushing = true;
        let (tx, rx) = oneshot::channel();
        self.idle_waiters.push(tx);
        self.release_due(Instant::now());
        self.pump(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<LookedUp> for PushActor {
    type Result = ();

    fn handle(&mut self, msg: LookedUp, ctx: &mut Self::Context) {
        self.lookups_in_flight -= 1;
        match msg.result {
            Ok(deliveries) => self.enqueue_deliveries(deliveries),
            Err(e) => {
                tracing::warn!(error = %e, users = msg.items, "push lookup failed; these pushes are dropped");
                metrics::counter!("chatnode_push_failed_total", "reason" => "store")
                    .increment(msg.items as u64);
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Delivered> for PushActor {
    type Result = ();

    fn handle(&mut self, msg: Delivered, ctx: &mut Self::Context) {
        self.sending -= 1;
        match msg.outcome {
            Outcome::Sent => metrics::counter!("chatnode_push_sent_total").increment(1),
            Outcome::TokenInvalid => {
                metrics::counter!("chatnode_push_failed_total", "reason" => "unregistered")
                    .increment(1);
                metrics::counter!("chatnode_push_devices_removed_total").increment(1);
            }
            Outcome::Failed(reason) => {
                metrics::counter!("chatnode_push_failed_total", "reason" => reason).increment(1);
            }
        }
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: MessageKind, name: Option<&str>) -> MessageNote {
        MessageNote {
            id: 42,
            from: UserId::parse("alice").expect("id"),
            from_name: name.map(str::to_owned),
            room_title: "Team".into(),
            kind,
            preview: Some("hello".into()),
        }
    }

    #[test]
    fn titles_and_bodies() {
        assert_eq!(
            alert_text(&note(MessageKind::Text, Some("Alice")), 1),
            ("Alice".into(), "hello".into())
        );
        assert_eq!(
            alert_text(&note(MessageKind::Text, None), 50),
            ("Team".into(), "50 new messages: hello".into())
        );
        assert_eq!(alert_text(&note(MessageKind::Image, None), 1).1, "Photo");
        assert_eq!(alert_text(&note(MessageKind::Video, None), 1).1, "Video");
        assert_eq!(
            alert_text(&note(MessageKind::File, None), 2).1,
            "2 new messages: File"
        );
    }

    #[test]
    fn room_keys_fit_apns() {
        let g = GroupId::parse("g").expect("id");
        let r = RoomId::parse("r").expect("id");
        assert_eq!(room_key(&g, &r), "g/r");
        let long = RoomId::parse(&"x".repeat(64)).expect("id");
        let key = room_key(&GroupId::parse(&"y".repeat(64)).expect("id"), &long);
        assert!(key.len() <= 64 && key.starts_with("room-"), "{key}");
    }
}
