//! [`SessionHandle`]: how actors reach a connection. It wraps the connection's **bounded**
//! outbound queue; a frame that does not fit marks the connection as a slow consumer, which its
//! own task then closes with 4008. Nothing that holds a handle ever waits on a connection.
//!
//! The queue is a plain `VecDeque` behind a mutex, read directly by the connection's writer (for
//! WebSocket the HTTP response body in `ws`, so a queued frame reaches the socket without waking
//! the connection's own task; for SSE the event stream). It allocates only while frames wait and
//! gives its memory back once drained, so an idle connection costs one small allocation here.
//!
//! [`Encoded`] encodes one event once per transport (MessagePack for WebSocket, an SSE event for
//! Server-Sent Events) however many connections receive it.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::ids::UserId;
use crate::protocol::{ServerFrame, encode};

/// A drained queue keeps at most this many slots of capacity; more is given back.
const KEEP_CAPACITY: usize = 4;

/// A connection's id, unique within the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// How a connection's frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
        }
    }
}

/// A control frame the writer sends besides the queued data (WebSocket only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Ping,
    Pong(Bytes),
}

/// The close frame that ends a WebSocket after its queued frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// Why a connection's task must stop, as seen from its writing side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The queue overflowed: close with 4008.
    Overflowed,
    /// The writer is gone: the socket was closed or failed.
    WriterGone,
    /// A room the connection was present in stopped under it: close with 1012.
    RoomLost,
}

/// One thing for the writer to write, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Control(Control),
    Frame(Bytes),
    /// The last frame: write it, then end.
    Close(Close),
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// The writer, waiting for frames.
    waker: Option<Waker>,
    ping: bool,
    pong: Option<Bytes>,
    close: Option<Close>,
    /// The connection's task ended: refuse new frames; the writer ends once the close (if any)
    /// is written.
    ended: bool,
}

struct Inner {
    id: SessionId,
    user: UserId,
    transport: Transport,
    capacity: usize,
    queue: Mutex<Queue>,
    overflowed: AtomicBool,
    /// Set once the writer is gone (the response was dropped or ended).
    writer_gone: AtomicBool,
    /// Set when a room this connection was present in stopped under it (its group died): the
    /// connection must end so the client reconnects and recovers with `enter ... since`.
    room_lost: AtomicBool,
    /// Wakes the connection's task on overflow and when the writer is gone, and the writer
    /// when the output has been ended.
    signal: Notify,
}

/// A cheap, cloneable handle to one connection's outbound queue.
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.inner.id)
            .field("user", &self.inner.user)
            .finish()
    }
}

/// The reading side, owned by the connection's writer.
pub struct Outbound {
    handle: SessionHandle,
    /// Takes frames without waiting (for code that drains the queue by hand).
    pub rx: Receiver,
}

/// Takes queued frames without waiting.
pub struct Receiver(SessionHandle);

/// Where [`Outbound::poll_drain`] puts what it takes from the queue.
pub trait Sink {
    /// Called before the items when data frames follow: `frames` of them, with `bytes` of
    /// payload in all, so the sink can size its buffer once.
    fn reserve(&mut self, frames: usize, bytes: usize);
    /// One item, in order.
    fn write(&mut self, item: Item);
}

/// Nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

impl Receiver {
    /// The next queued frame, if any.
    pub fn try_recv(&mut self) -> Result<Bytes, Empty> {
        self.0.pop().ok_or(Empty)
    }
}

impl SessionHandle {
    /// A new connection's handle and its queue of `capacity` frames.
    pub fn new(user: UserId, transport: Transport, capacity: usize) -> (Self, Outbound) {
        let handle = Self {
            inner: Arc::new(Inner {
                id: SessionId::next(),
                user,
                transport,
                capacity,
                queue: Mutex::new(Queue::default()),
                overflowed: AtomicBool::new(false),
                writer_gone: AtomicBool::new(false),
                room_lost: AtomicBool::new(false),
                signal: Notify::new(),
            }),
        };
        let outbound = Outbound {
            handle: handle.clone(),
            rx: Receiver(handle.clone()),
        };
        (handle, outbound)
    }

    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    pub fn user(&self) -> &UserId {
        &self.inner.user
    }

    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held cannot leave the queue inconsistent: use it anyway.
        self.inner
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an already-encoded frame without waiting. Returns false when the connection is
    /// gone or too slow (and then marks it for closing).
    pub fn send_bytes(&self, frame: Bytes) -> bool {
        let mut queue = self.queue();
        if queue.ended || self.inner.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if queue.frames.len() >= self.inner.capacity {
            drop(queue);
            if !self.inner.overflowed.swap(true, Ordering::AcqRel) {
                metrics::counter!("chatnode_slow_consumer_closes_total",
                    "transport" => self.inner.transport.as_str())
                .increment(1);
                self.inner.signal.notify_waiters();
            }
            return false;
        }
        queue.frames.push_back(frame);
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Encodes `frame` for this connection and queues it.
    pub fn send(&self, frame: &ServerFrame<'_>) -> bool {
        self.deliver(&Encoded::new(frame))
    }

    /// Queues a frame encoded once for many recipients.
    pub fn deliver(&self, encoded: &Encoded<'_>) -> bool {
        self.send_bytes(encoded.bytes(self.inner.transport))
    }

    /// Whether the connection has ended (its task finished or its writer is gone).
    pub fn is_closed(&self) -> bool {
        self.inner.writer_gone.load(Ordering::Acquire) || self.queue().ended
    }

    /// Tells the connection that a room it was present in stopped under it (the room's group
    /// died): the connection ends, and the client reconnects and recovers with `enter ... since`
    /// instead of believing it is still present. Never waits.
    pub fn room_lost(&self) {
        if !self.inner.room_lost.swap(true, Ordering::AcqRel) {
            self.inner.signal.notify_waiters();
        }
    }

    /// Asks the writer for a control frame (it goes out before the queued data).
    pub fn control(&self, control: Control) {
        let mut queue = self.queue();
        if queue.ended {
            return;
        }
        match control {
            Control::Ping => queue.ping = true,
            // Only the latest ping needs its pong (RFC 6455 §5.5.3).
            Control::Pong(payload) => queue.pong = Some(payload),
        }
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends the connection's output: the frames already queued go out, then `close` (if any),
    /// then the writer ends. Frames queued afterwards are refused.
    pub fn finish(&self, close: Option<Close>) {
        let mut queue = self.queue();
        queue.ended = true;
        queue.close = close;
        if close.is_none() {
            // Nothing to say: whatever is still queued is dropped with the connection.
            queue.frames = VecDeque::new();
        }
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        self.inner.signal.notify_waiters();
    }

    /// Resolves once the connection's output has been ended ([`Self::finish`], or the writer
    /// went away).
    pub async fn ended(&self) {
        self.signalled(|h| h.queue().ended.then_some(())).await;
    }

    /// Takes the frame at the front of the queue, giving the queue's memory back once empty.
    fn pop(&self) -> Option<Bytes> {
        let mut queue = self.queue();
        let frame = queue.frames.pop_front();
        if queue.frames.is_empty() && queue.frames.capacity() > KEEP_CAPACITY {
            queue.frames = VecDeque::new();
        }
        frame
    }

    /// Resolves when the queue overflows or the writer goes away, whichever comes first.
    pub async fn trouble(&self) -> Trouble {
        self.signalled(|h| {
            let inner = &h.inner;
            if inner.overflowed.load(Ordering::Acquire) {
                Some(Trouble::Overflowed)
            } else if inner.writer_gone.load(Ordering::Acquire) {
                Some(Trouble::WriterGone)
            } else if inner.room_lost.load(Ordering::Acquire) {
                Some(Trouble::RoomLost)
            } else {
                None
            }
        })
        .await
    }

    /// Resolves once the writer is gone: it wrote its last frame, or its socket went away.
    pub async fn writer_gone(&self) {
        self.signalled(|h| h.inner.writer_gone.load(Ordering::Acquire).then_some(()))
            .await;
    }

    /// Waits on `signal` until `check` finds what it looks for (registered before each look,
    /// so a signal between the look and the wait is not missed).
    async fn signalled<T>(&self, check: impl Fn(&Self) -> Option<T>) -> T {
        loop {
            let notified = self.inner.signal.notified();
            if let Some(found) = check(self) {
                return found;
            }
            notified.await;
        }
    }
}

impl Outbound {
    /// The connection's handle.
    pub fn handle(&self) -> &SessionHandle {
        &self.handle
    }

    /// Hands the writer any control frame and up to `max` queued frames, in order (under the
    /// queue's lock, so the sink must only copy). `Ready(true)` means the connection's output
    /// is over (after a close, if one was asked for); `Ready(false)` that something was
    /// written; `Pending` that nothing was, and the caller's waker is kept for the next frame.
    pub fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        sink: &mut impl Sink,
    ) -> Poll<bool> {
        let mut queue = self.handle.queue();
        let frames = queue.frames.len().min(max);
        if frames > 0 {
            sink.reserve(
                frames,
                queue.frames.iter().take(frames).map(Bytes::len).sum(),
            );
        }
        let mut wrote = false;
        if std::mem::take(&mut queue.ping) {
            sink.write(Item::Control(Control::Ping));
            wrote = true;
        }
        if let Some(payload) = queue.pong.take() {
            sink.write(Item::Control(Control::Pong(payload)));
            wrote = true;
        }
        for frame in queue.frames.drain(..frames) {
            sink.write(Item::Frame(frame));
            wrote = true;
        }
        if queue.frames.is_empty() {
            if queue.frames.capacity() > KEEP_CAPACITY {
                queue.frames = VecDeque::new();
            }
            if queue.ended {
                if let Some(close) = queue.close.take() {
                    sink.write(Item::Close(close));
                }
                return Poll::Ready(true);
            }
        }
        if wrote {
            return Poll::Ready(false);
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next queued frame, or `None` once the connection has ended (for SSE).
    pub async fn recv(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            if let Some(frame) = self.handle.pop() {
                return Poll::Ready(Some(frame));
            }
            let mut queue = self.handle.queue();
            if !queue.frames.is_empty() {
                // Queued between the two looks.
                return Poll::Ready(queue.frames.pop_front());
            }
            if queue.ended {
                return Poll::Ready(None);
            }
            queue.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let inner = &self.handle.inner;
        inner.writer_gone.store(true, Ordering::Release);
        {
            let mut queue = self.handle.queue();
            queue.ended = true;
            queue.frames = VecDeque::new();
            queue.waker = None;
        }
        inner.signal.notify_waiters();
    }
}

/// One event, encoded lazily at most once per transport.
pub struct Encoded<'a> {
    frame: &'a ServerFrame<'a>,
    msgpack: OnceCell<Bytes>,
    sse: OnceCell<Bytes>,
}

impl<'a> Encoded<'a> {
    pub fn new(frame: &'a ServerFrame<'a>) -> Self {
        Self {
            frame,
            msgpack: OnceCell::new(),
            sse: OnceCell::new(),
        }
    }

    pub fn bytes(&self, transport: Transport) -> Bytes {
        match transport {
            Transport::WebSocket => self.msgpack.get_or_init(|| encode(self.frame)).clone(),
            Transport::Sse => self.sse.get_or_init(|| sse_event(self.frame)).clone(),
        }
    }
}

/// Formats a frame as one Server-Sent Event: `event:` its type, `id:` the message id for
/// `msg`, `data:` the frame as JSON (ids as strings).
pub fn sse_event(frame: &ServerFrame<'_>) -> Bytes {
    let json = serde_json::to_string(frame).unwrap_or_else(|_| {
        r#"{"t":"err","code":"internal","message":"encoding failed"}"#.to_owned()
    });
    let mut out = String::with_capacity(json.len() + 48);
    out.push_str("event: ");
    out.push_str(frame.kind());
    out.push('\n');
    if let ServerFrame::Msg { id, .. } = frame {
        out.push_str("id: ");
        out.push_str(&id.0.to_string());
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&json);
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Id};

    #[tokio::test]
    async fn overflow_marks_the_session() {
        let user = UserId::parse("u").expect("id");
        let (handle, mut outbound) = SessionHandle::new(user, Transport::WebSocket, 2);
        let frame = ServerFrame::Ok { r: None };
        assert!(handle.send(&frame));
        assert!(handle.send(&frame));
        assert!(!handle.send(&frame));
        let trouble = tokio::time::timeout(std::time::Duration::from_secs(1), handle.trouble())
            .await
            .expect("overflow is signalled");
        assert_eq!(trouble, Trouble::Overflowed);
        assert!(outbound.recv().await.is_some());
        assert!(outbound.rx.try_recv().is_ok());
        assert_eq!(outbound.rx.try_recv(), Err(Empty));
        // Ended: what was queued is dropped, nothing more is accepted, the reader sees the end.
        handle.finish(None);
        assert!(!handle.send(&frame));
        assert!(outbound.recv().await.is_none());
        drop(outbound);
        assert!(handle.is_closed());
    }

    #[test]
    fn sse_events_carry_type_id_and_json() {
        let frame = ServerFrame::Deleted {
            group: "g",
            room: "r",
            id: Id(9),
        };
        let text = String::from_utf8(sse_event(&frame).to_vec()).expect("utf8");
        assert_eq!(
            text,
            "event: deleted\ndata: {\"t\":\"deleted\",\"group\":\"g\",\"room\":\"r\",\"id\":\"9\"}\n\n"
        );
        let err = ServerFrame::Err {
            r: Some(1),
            code: ErrorCode::Forbidden,
            message: "no",
        };
        assert!(String::from_utf8_lossy(&sse_event(&err)).contains("\"code\":\"forbidden\""));
    }
}
