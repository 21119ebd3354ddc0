//! Push notifications for members who are away (docs/protocol.md §7), over FCM HTTP v1.
//!
//! ```text
//! RoomActor ── RoomActivity (+ MessageNote) ──> GroupActor ── NotifyAbsent ──> PushActor ──> FCM
//!           ── MoreActivity ───────────────────>            ── NotifyMore ──>
//!           ── MemberRead (a cursor moved) ────>            ── NotifyRead ──>
//! ```
//!
//! Everything a room hands to push goes through its group, one mailbox after the other, so the
//! push actor sees it in the room's order.
//!
//! - The room names the members who are not present with their unread counts; the group keeps
//!   those who have no connection subscribed (`sub`) and are not the sender. Both hand over
//!   with `try_send` through a [`PushHandle`] and never wait: a full mailbox drops the push
//!   and counts it, and chat goes on.
//! - [`actor::PushActor`] (its own thread) coalesces per (user, room), looks up devices and
//!   mutes in the store, and sends with bounded concurrency through [`fcm::FcmClient`].
//!
//! Push is off without `push.fcm_key_file` (the default): then the handle is disabled, rooms
//! build nothing for push, and the node says so once at start.

pub mod actor;
pub mod fcm;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use self::actor::{Flush, NotifyAbsent, NotifyMore, NotifyRead, PushActor};
use self::fcm::{ClientOptions, FcmClient, PushError, ServiceAccount};
use crate::config::PushSettings;
use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::MessageKind;
use crate::store::SharedStore;

/// How long a room's full list of absent members stands for later messages: while nothing
/// changes in the room (same sender, nobody subscribed, no presence, membership or cursor
/// change), the room says "one more" ([`PushHandle::more`]) instead of listing its absent
/// members again, for this long or one coalescing window, whichever is longer. The push actor
/// keeps each list a minute beyond that, so a lagging mailbox still finds it.
pub const LIST_REUSE: Duration = Duration::from_secs(60);

/// How long a room may go on saying "one more" after a full list, given the coalescing
/// window (see [`LIST_REUSE`]).
pub fn list_reuse(window: Duration) -> Duration {
    window.max(LIST_REUSE)
}

/// What a push says about a new message (one per message, shared by all its recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageNote {
    pub id: MessageId,
    pub from: UserId,
    /// The sender's display name, when their token had one.
    pub from_name: Option<String>,
    /// The room's title, the notification's title when the sender has no name.
    pub room_title: String,
    pub kind: MessageKind,
    /// The start of a text message (docs/protocol.md §3.4's summary length).
    pub preview: Option<String>,
}

/// How rooms and groups reach the push actor: a cheap clone that never waits.
#[derive(Clone, Default)]
pub struct PushHandle {
    addr: Option<Addr<PushActor>>,
}

impl PushHandle {
    /// Push is off: every call does nothing.
    pub fn disabled() -> Self {
        Self { addr: None }
    }

    pub fn new(addr: Addr<PushActor>) -> Self {
        Self { addr: Some(addr) }
    }

    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// A new message for `recipients` (user, their unread count in the room).
    pub fn absent(
        &self,
        group: GroupId,
        room: RoomId,
        note: Arc<MessageNote>,
        recipients: Vec<(UserId, u64)>,
    ) {
        let Some(addr) = &self.addr else {
            return;
        };
        let count = recipients.len() as u64;
        if addr
            .try_send(NotifyAbsent {
                group,
                room,
                note,
                recipients,
            })
            .is_err()
        {
            metrics::counter!("chatnode_push_dropped_total", "reason" => "mailbox_full")
                .increment(count);
        }
    }

    /// One more message for the same members as the room's last [`absent`](Self::absent) call,
    /// each with one more unread (the room saw nothing change meanwhile).
    pub fn more(&self, group: GroupId, room: RoomId, note: Arc<MessageNote>) {
        let Some(addr) = &self.addr else {
            return;
        };
        if addr.try_send(NotifyMore { group, room, note }).is_err() {
            metrics::counter!("chatnode_push_dropped_total", "reason" => "mailbox_full")
                .increment(1);
        }
    }

    /// `user` read the room up to `cursor` on some device; their other devices hear it.
    pub fn read(&self, group: GroupId, room: RoomId, user: UserId, cursor: MessageId, unread: u64) {
        let Some(addr) = &self.addr else {
            return;
        };
        if addr
            .try_send(NotifyRead {
                group,
                room,
                user,
                cursor,
                unread,
            })
            .is_err()
        {
            metrics::counter!("chatnode_push_dropped_total", "reason" => "mailbox_full")
                .increment(1);
        }
    }

    /// Sends what is coalescing now and waits, at most `within`, until nothing is left
    /// (node shutdown, after the rooms have drained).
    pub async fn flush(&self, within: Duration) {
        let Some(addr) = &self.addr else {
            return;
        };
        if tokio::time::timeout(within, addr.send(Flush))
            .await
            .is_err()
        {
            tracing::warn!("pushes still in flight at shutdown were abandoned");
        }
    }
}

/// A running push service: the handle, and the thread its actor runs on.
pub struct Push {
    pub handle: PushHandle,
    arbiter: Option<Arbiter>,
}

impl Push {
    /// Stops the push actor's thread (after [`PushHandle::flush`]).
    pub fn stop(self) {
        if let Some(arbiter) = self.arbiter {
            arbiter.stop();
        }
    }
}

/// Runs on the push thread: lowers its scheduling priority (`SCHED_BATCH`, nice 19), so rooms
/// and connections always go first and pushes take the CPU they leave. Everything push does
/// (coalescing, building requests, HTTP) runs on that thread; only store reads run elsewhere.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        let lowest = thread_priority::ThreadPriority::Min;
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), lowest, policy) {
            tracing::debug!(error = ?e, "the push thread keeps its priority");
        }
    }
}

/// Starts push when a key file is configured: reads and checks the key (a clear error names
/// what is wrong with it), builds the FCM client and starts the [`PushActor`] on a thread of
/// its own. Without a key, says once that push is off. Call inside an actix `System`.
pub fn start(settings: &PushSettings, store: SharedStore) -> Result<Push, PushError> {
    let Some(path) = &settings.fcm_key_file else {
        tracing::info!("push notifications are off: no push.fcm_key_file is configured");
        return Ok(Push {
            handle: PushHandle::disabled(),
            arbiter: None,
        });
    };
    let account = ServiceAccount::load(path)?;
    let options = ClientOptions {
        endpoint: settings.fcm_endpoint.clone(),
        retry_for: Duration::from_secs(settings.retry_secs),
        pool: settings.concurrency,
    };
    let client = Arc::new(FcmClient::new(account, &options)?);
    tracing::info!(
        project = client.project_id(),
        endpoint = %settings.fcm_endpoint,
        coalesce_ms = settings.coalesce_ms,
        "push notifications are on (FCM HTTP v1)"
    );
    let arbiter = Arbiter::new();
    arbiter.spawn_fn(lower_priority);
    let actor_settings = settings.clone();
    let addr = PushActor::start_in_arbiter(&arbiter.handle(), move |_| {
        PushActor::new(store, client, &actor_settings)
    });
    Ok(Push {
        handle: PushHandle::new(addr),
        arbiter: Some(arbiter),
    })
}
