//! [`SessionHandle`]: how actors reach a connection. It wraps the connection's **bounded**
//! outbound queue; a frame that does not fit marks the connection as a slow consumer, which its
//! own task then closes with 4008. Nothing that holds a handle ever waits on a connection.
//!
//! [`Encoded`] encodes one event once per transport (MessagePack for WebSocket, an SSE event for
//! Server-Sent Events) however many connections receive it.

use std::cell::OnceCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::ids::UserId;
use crate::protocol::{ServerFrame, encode};

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

struct Inner {
    id: SessionId,
    user: UserId,
    transport: Transport,
    tx: mpsc::Sender<Bytes>,
    overflowed: AtomicBool,
    overflow: Notify,
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

/// The receiving half, owned by the connection's task.
pub struct Outbound {
    pub rx: mpsc::Receiver<Bytes>,
    pub overflow: OverflowWatch,
}

/// Tells a connection's task that its queue overflowed.
pub struct OverflowWatch(SessionHandle);

impl OverflowWatch {
    /// Resolves once the queue has overflowed (the connection must close with 4008).
    pub async fn overflowed(&self) {
        loop {
            let notified = self.0.inner.overflow.notified();
            if self.0.inner.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl SessionHandle {
    /// A new connection's handle and its queue of `capacity` frames.
    pub fn new(user: UserId, transport: Transport, capacity: usize) -> (Self, Outbound) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = Self {
            inner: Arc::new(Inner {
                id: SessionId::next(),
                user,
                transport,
                tx,
                overflowed: AtomicBool::new(false),
                overflow: Notify::new(),
            }),
        };
        let outbound = Outbound {
            rx,
            overflow: OverflowWatch(handle.clone()),
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

    /// Queues an already-encoded frame without waiting. Returns false when the connection is
    /// gone or too slow (and then marks it for closing).
    pub fn send_bytes(&self, frame: Bytes) -> bool {
        match self.inner.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.inner.overflowed.swap(true, Ordering::AcqRel) {
                    metrics::counter!("chatnode_slow_consumer_closes_total",
                        "transport" => self.inner.transport.as_str())
                    .increment(1);
                    self.inner.overflow.notify_waiters();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Encodes `frame` for this connection and queues it.
    pub fn send(&self, frame: &ServerFrame<'_>) -> bool {
        self.deliver(&Encoded::new(frame))
    }

    /// Queues a frame encoded once for many recipients.
    pub fn deliver(&self, encoded: &Encoded<'_>) -> bool {
        self.send_bytes(encoded.bytes(self.inner.transport))
    }

    /// Whether the connection's task has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.tx.is_closed()
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
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            outbound.overflow.overflowed(),
        )
        .await
        .expect("overflow is signalled");
        assert!(outbound.rx.recv().await.is_some());
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
