//! The WebSocket endpoint (`GET /v1/ws`, docs/protocol.md §3) and the per-connection loop.
//!
//! The listener (`src/server.rs`) hands every WebSocket handshake to [`serve_upgrade`] with its
//! socket. The token is checked before the upgrade (401 otherwise); after the 101, actix-http's
//! connection state (its buffers, the request) is dropped and the connection runs on the bare
//! socket, in two halves on the worker that accepted it:
//!
//! - **the writer** ([`write_out`], on the task that accepted the socket) takes frames straight
//!   from the connection's queue ([`SessionHandle`]), many per wake-up, framed into one buffer
//!   ([`WsWriter`]) and written with one `send`, so a room's broadcast reaches the socket
//!   without waking any other task;
//! - **the reader** is the connection's task: it reads and decodes frames (RFC 6455 framing with
//!   actix-http's parser; continuations are joined up to the frame limit), rate-limits them,
//!   routes requests to room and group actors (waiting only for mailbox room, never for a
//!   reply), pings every heartbeat and watches the token's expiry.
//!
//! Nothing is allocated per connection beyond what that needs: no channel between the halves, a
//! queue that holds memory only while frames wait, a read buffer only while bytes arrive, and
//! one timer for both the heartbeat and the token's expiry. A connection ends on the client's
//! close (answered with 1000), silence for two heartbeats, token expiry (4001), a full
//! outbound queue (4008), rate-limit abuse (4009), an oversize frame (1009), a protocol
//! violation (1002), a text frame that is not UTF-8 (1007) or node shutdown (1001); frames
//! already queued go out before the close frame.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_codec::Framed;
use actix_http::body::{BoxBody, MessageBody as _};
use actix_http::h1;
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser, ProtocolError};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::handle::{Close, Control, Item, Outbound, SessionHandle, Sink, Transport, Trouble};
use super::ratelimit::{RateLimiter, Verdict};
use crate::actors::Responder;
use crate::actors::group::{GroupActor, Subscribe, Unsubscribe};
use crate::actors::room::{
    Attach, DeleteMessage, Detach, EditMessage, GetHistory, MarkRead, PostMessage, RoomActor,
    Typing,
};
use crate::api::authenticate_head;
use crate::auth::Principal;
use crate::error::ChatError;
use crate::ids::{GroupId, RoomId, now_ms};
use crate::protocol::frame::HelloLimits;
use crate::protocol::{ErrorCode, Request, ServerFrame, decode_request, encode, encode_err};
use crate::state::AppState;

/// Close codes (docs/protocol.md §3.6).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    /// RFC 6455 §7.4.1: a frame the protocol does not allow.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// RFC 6455 §7.4.1: a text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_ABUSE: u16 = 4009;
    /// Added by this node (RFC 6455's "service restart"): a room the connection was present in
    /// restarted under it; reconnect and recover with `enter ... since`.
    pub const SERVICE_RESTART: u16 = 1012;
}

/// Most frames the writer takes from the queue per poll (one socket write for all of them).
const WRITE_BATCH: usize = 64;
/// The longest header of an unmasked frame (RFC 6455 §5.2): two bytes and an 8-byte length.
const MAX_HEADER: usize = 10;
/// How long a close frame may wait for a socket that does not drain.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Room addresses a connection remembers for rooms it has not entered.
const ROOM_CACHE: usize = 64;

/// `GET /v1/ws` without an upgrade: the answer a client gets when its request is not a
/// WebSocket handshake (401 without a valid token, 503 while shutting down, else 400). A
/// handshake never reaches this handler: the listener hands it to [`serve_upgrade`] with the
/// socket (src/server.rs).
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "websocket",
    summary = "WebSocket upgrade (binary MessagePack frames, PROTOCOL.md §3)",
    params(("token" = Option<String>, Query, description = "The JWT, for clients that cannot set headers")),
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket handshake"),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 503, description = "The node is shutting down", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn upgrade(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match admit(req.head(), &state) {
        // Not reached for a real handshake (see above); a request that passes the checks
        // without being one is refused by the handshake check inside `admit`.
        Ok(_) => HttpResponse::BadRequest().finish(),
        Err(response) => response.into(),
    }
}

/// The checks in front of every WebSocket: a valid token (header or `token` query), a node
/// that is not shutting down, and a valid RFC 6455 handshake. Returns the caller and the 101
/// response, or the error response to send instead.
fn admit(
    head: &actix_http::RequestHead,
    state: &AppState,
) -> Result<(Principal, actix_http::Response<()>), actix_http::Response<BoxBody>> {
    let principal = authenticate_head(head, state)
        .map_err(|e| actix_http::Response::<BoxBody>::from(e.error_response()))?;
    if state.shutdown.is_cancelled() {
        return Err(crate::api::error::error_response(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the node is shutting down; connect to another",
        )
        .into());
    }
    let mut response = actix_http::ws::handshake(head).map_err(actix_http::Response::from)?;
    Ok((principal, response.finish().drop_body()))
}

/// The listener's upgrade service (src/server.rs): every request that asks for a WebSocket
/// arrives here with its socket. `GET /v1/ws` that passes [`admit`] gets its 101 and runs as a
/// connection on the bare socket: the reader is a task of its own ([`Connection`]), the
/// writer runs here, on the task that accepted the socket. Anything else gets its error
/// response and the socket is closed.
pub async fn serve_upgrade(
    state: Arc<AppState>,
    req: actix_http::Request,
    framed: Framed<crate::server::conn::Conn, h1::Codec>,
) -> Result<(), Infallible> {
    let admitted = if req.path() != "/v1/ws" {
        Err(crate::api::no_such_route().into())
    } else if req.method() != actix_web::http::Method::GET {
        Err(crate::api::error::error_response(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest,
            "a WebSocket handshake is a GET",
        )
        .into())
    } else {
        admit(req.head(), &state)
    };
    // The request's head shares the dispatcher's read buffer: let both go now, not with the
    // connection.
    drop(req);
    let (principal, response) = match admitted {
        Ok(admitted) => admitted,
        Err(response) => {
            // The socket is not reused after an upgrade request: say so, answer, close.
            let (mut response, body) = response.into_parts();
            response
                .head_mut()
                .set_connection_type(actix_http::ConnectionType::Close);
            // Error answers are built in memory (JSON or a short text).
            let body = body.try_into_bytes().unwrap_or_default();
            if let Err(e) = h1::SendResponse::new(framed, response.set_body(body)).await {
                tracing::debug!(error = %e, "writing a refused handshake's answer failed");
            }
            return Ok(());
        }
    };
    let framed = match h1::SendResponse::new(framed, response).await {
        Ok(framed) => framed,
        Err(e) => {
            tracing::debug!(error = %e, "writing the 101 response failed");
            return Ok(());
        }
    };
    // The HTTP buffers go; bytes the client sent after its handshake stay in `read_buf`.
    let parts = framed.into_parts();
    let (read, write) = parts.io.into_inner().into_split();
    let leftover = parts.read_buf.freeze();
    drop(parts.write_buf);

    let limits = &state.settings.limits;
    let (handle, outbound) = SessionHandle::new(
        principal.user.clone(),
        Transport::WebSocket,
        limits.outbound_queue,
    );
    let inbound = Inbound::new(SocketChunks::new(read, leftover), limits.frame);
    let tracker = state.connections.clone();
    let reader_handle = handle.clone();
    // The reader is a task of its own, so that a frame queued for this connection wakes only
    // the writer below. Sockets are !Send: both stay on the worker that accepted this one.
    actix_web::rt::spawn(tracker.track_future(async move {
        let mut conn = Connection::new(state, principal, reader_handle);
        conn.run(inbound).await;
    }));
    tracker
        .track_future(write_out(WsWriter::new(outbound), write, handle))
        .await;
    Ok(())
}

/// The writer's loop: what the queue holds, framed by [`WsWriter`], written to the socket
/// batch by batch; then the write side is shut down. It ends early when the socket fails,
/// and gives a client that stops reading [`CLOSE_WAIT`] after the connection has ended.
///
/// Nearly every write completes at once (the socket has room). Only a write that has to wait
/// also watches for the connection's end, so the per-batch path polls nothing else.
async fn write_out(mut writer: WsWriter, mut socket: OwnedWriteHalf, handle: SessionHandle) {
    // When a client that does not drain its socket is given up on, once the connection ended.
    let mut give_up = None;
    while let Some(chunk) = std::future::poll_fn(|cx| writer.poll_chunk(cx)).await {
        let mut write = pin!(socket.write_all(&chunk));
        let written = match futures_util::poll!(write.as_mut()) {
            Poll::Ready(written) => written,
            Poll::Pending => {
                let abandon = async {
                    let at = match give_up {
                        Some(at) => at,
                        None => {
                            handle.ended().await;
                            *give_up.insert(tokio::time::Instant::now() + CLOSE_WAIT)
                        }
                    };
                    tokio::time::sleep_until(at).await;
                };
                tokio::select! {
                    biased;
                    written = write => written,
                    () = abandon => {
                        tracing::debug!("websocket writer abandoned a socket that does not drain");
                        break;
                    }
                }
            }
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "websocket write failed");
            break;
        }
    }
    let _ = socket.shutdown().await;
    // Dropping the writer (and its queue) tells the reader that the socket is gone.
    drop(writer);
}

/// The reading half's source: what the socket delivers, as chunks, starting with the bytes
/// read together with the handshake. It reads into a buffer on the stack and keeps only what
/// arrived, so an idle connection holds no read buffer.
struct SocketChunks {
    socket: OwnedReadHalf,
    leftover: Option<Bytes>,
}

/// The most one read takes from the socket.
const READ_CHUNK: usize = 4096;

impl SocketChunks {
    fn new(socket: OwnedReadHalf, leftover: Bytes) -> Self {
        Self {
            socket,
            leftover: (!leftover.is_empty()).then_some(leftover),
        }
    }
}

impl futures_util::Stream for SocketChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.leftover.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut space);
        match Pin::new(&mut self.socket).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
        }
    }
}

/// The writing half's framing: what the queue holds (control frames first, then up to
/// [`WRITE_BATCH`] data frames) as one chunk per poll; it ends after the close frame or when
/// the connection's task has ended without one.
struct WsWriter {
    outbound: Outbound,
    done: bool,
}

impl WsWriter {
    fn new(outbound: Outbound) -> Self {
        Self {
            outbound,
            done: false,
        }
    }

    /// The next chunk to write; `None` once the output is over.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::new();
        let drained = self.outbound.poll_drain(cx, WRITE_BATCH, &mut buf);
        let end = match drained {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(end) => end,
        };
        self.done = end;
        if buf.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(buf.freeze()))
        }
    }
}

/// The writer's buffer: every item framed as RFC 6455 §5.2 says (unmasked, as a server
/// sends), the batch's data frames in one allocation.
impl Sink for BytesMut {
    fn reserve(&mut self, frames: usize, bytes: usize) {
        BytesMut::reserve(self, bytes + frames * MAX_HEADER);
    }

    fn write(&mut self, item: Item) {
        match item {
            Item::Frame(frame) => Parser::write_message(self, frame, OpCode::Binary, true, false),
            Item::Control(Control::Ping) => {
                Parser::write_message(self, b"", OpCode::Ping, true, false);
            }
            Item::Control(Control::Pong(payload)) => {
                Parser::write_message(self, payload, OpCode::Pong, true, false);
            }
            Item::Close(Close { code, reason }) => {
                let reason = CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(reason.to_owned()),
                };
                Parser::write_close(self, Some(reason), false);
            }
        }
    }
}

/// A complete message from the client (continuations joined).
enum InFrame {
    Binary(Bytes),
    Text(Bytes),
    Ping(Bytes),
    Pong,
    Close,
}

/// The reading half's decoder: request body chunks in, whole messages out. Its buffer is
/// released whenever it has been read to the end, so an idle connection holds none.
struct Inbound<S> {
    payload: S,
    buf: BytesMut,
    max: usize,
    /// A fragmented message being joined: whether it is text, and its parts so far.
    partial: Option<(bool, BytesMut)>,
}

impl<S, E> Inbound<S>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    fn new(payload: S, max: usize) -> Self {
        Self {
            payload,
            buf: BytesMut::new(),
            max,
            partial: None,
        }
    }

    /// The next message; `None` when the client went away.
    async fn next(&mut self) -> Option<Result<InFrame, Ending>> {
        loop {
            match self.parse() {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(ending) => return Some(Err(ending)),
            }
            match self.payload.next().await {
                Some(Ok(chunk)) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::from(chunk);
                    } else {
                        self.buf.extend_from_slice(&chunk);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read error");
                    return Some(Err(Ending::SocketError));
                }
                None => return None,
            }
        }
    }

    /// The declared payload length of the frame at the front of the buffer, once its header
    /// is complete, so an oversize frame is refused before it is buffered.
    fn declared_len(&self) -> Option<u64> {
        let b = &self.buf;
        match b.get(1).map(|b| b & 0x7f)? {
            126 => b
                .get(2..4)
                .map(|s| u64::from(u16::from_be_bytes([s[0], s[1]]))),
            127 => b.get(2..10).map(|s| {
                let mut n = [0u8; 8];
                n.copy_from_slice(s);
                u64::from_be_bytes(n)
            }),
            n => Some(u64::from(n)),
        }
    }

    fn parse(&mut self) -> Result<Option<InFrame>, Ending> {
        loop {
            if self.declared_len().is_some_and(|n| n > self.max as u64) {
                return Err(Ending::TooBig);
            }
            let parsed = Parser::parse(&mut self.buf, true, self.max).map_err(|e| match e {
                ProtocolError::Overflow => Ending::TooBig,
                e => {
                    tracing::debug!(error = %e, "websocket protocol error");
                    Ending::ProtocolError
                }
            })?;
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // Read to the end: give the memory back (frames already split off keep theirs).
                self.buf = BytesMut::new();
            }
            let Some((fin, opcode, data)) = parsed else {
                return Ok(None);
            };
            let data = data.unwrap_or_default();
            let whole = match opcode {
                OpCode::Binary | OpCode::Text if self.partial.is_some() => {
                    tracing::debug!(
                        "websocket protocol error: new message inside a fragmented one"
                    );
                    return Err(Ending::ProtocolError);
                }
                OpCode::Binary | OpCode::Text if !fin => {
                    self.partial = Some((opcode == OpCode::Text, data));
                    continue;
                }
                OpCode::Binary => InFrame::Binary(data.freeze()),
                OpCode::Text => InFrame::Text(data.freeze()),
                OpCode::Continue => {
                    let Some((text, mut joined)) = self.partial.take() else {
                        tracing::debug!("websocket protocol error: continuation without a start");
                        return Err(Ending::ProtocolError);
                    };
                    if joined.len() + data.len() > self.max {
                        return Err(Ending::TooBig);
                    }
                    joined.extend_from_slice(&data);
                    if !fin {
                        self.partial = Some((text, joined));
                        continue;
                    }
                    let joined = joined.freeze();
                    if text {
                        InFrame::Text(joined)
                    } else {
                        InFrame::Binary(joined)
                    }
                }
                OpCode::Ping => InFrame::Ping(data.freeze()),
                OpCode::Pong => InFrame::Pong,
                OpCode::Close => InFrame::Close,
                OpCode::Bad => {
                    tracing::debug!("websocket protocol error: bad opcode");
                    return Err(Ending::ProtocolError);
                }
            };
            return Ok(Some(whole));
        }
    }
}

/// How a connection ended, for logs and the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client sent a close frame: answered with 1000 (RFC 6455 §5.5.1).
    CloseRequested,
    /// The client's socket went away.
    ClientClosed,
    Silent,
    Shutdown,
    TokenExpired,
    SlowConsumer,
    RoomLost,
    RateAbuse,
    TooBig,
    /// A frame RFC 6455 does not allow (reserved bits, unknown opcode, unmasked, broken
    /// fragmentation): 1002 (§7.4.1).
    ProtocolError,
    /// A text frame that is not UTF-8: 1007 (§8.1).
    InvalidPayload,
    SocketError,
}

impl Ending {
    fn close_code(self) -> Option<u16> {
        match self {
            Self::CloseRequested => Some(close::NORMAL),
            Self::Shutdown => Some(close::GOING_AWAY),
            Self::TokenExpired => Some(close::TOKEN_EXPIRED),
            Self::SlowConsumer => Some(close::SLOW_CONSUMER),
            Self::RoomLost => Some(close::SERVICE_RESTART),
            Self::RateAbuse => Some(close::RATE_ABUSE),
            Self::TooBig => Some(close::TOO_BIG),
            Self::ProtocolError => Some(close::PROTOCOL_ERROR),
            Self::InvalidPayload => Some(close::INVALID_PAYLOAD),
            Self::ClientClosed | Self::Silent | Self::SocketError => None,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Shutdown => "the node is shutting down",
            Self::TokenExpired => "the token expired",
            Self::SlowConsumer => "the connection could not keep up; recover with enter since",
            Self::RoomLost => "a room restarted; reconnect and recover with enter since",
            Self::RateAbuse => "repeated abuse of the rate limit",
            Self::TooBig => "frame over the frame limit",
            Self::ProtocolError => "websocket protocol error",
            Self::InvalidPayload => "a text frame that is not UTF-8",
            Self::CloseRequested | Self::ClientClosed => "closed by the client",
            Self::Silent => "silent for two heartbeats",
            Self::SocketError => "socket error",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::CloseRequested | Self::ClientClosed => "client_closed",
            Self::Silent => "silent",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
            Self::RoomLost => "room_lost",
            Self::RateAbuse => "rate_abuse",
            Self::TooBig => "too_big",
            Self::ProtocolError => "protocol_error",
            Self::InvalidPayload => "invalid_payload",
            Self::SocketError => "socket_error",
        }
    }
}

struct Connection {
    state: std::sync::Arc<AppState>,
    principal: Principal,
    handle: SessionHandle,
    limiter: RateLimiter,
    /// Rooms this connection is present in.
    entered: HashMap<(GroupId, RoomId), Addr<RoomActor>>,
    /// Rooms it has talked to without entering.
    known: HashMap<(GroupId, RoomId), Addr<RoomActor>>,
    subscribed: HashMap<GroupId, Addr<GroupActor>>,
    last_seen: Instant,
}

impl Connection {
    fn new(state: std::sync::Arc<AppState>, principal: Principal, handle: SessionHandle) -> Self {
        let limits = &state.settings.limits;
        let limiter = RateLimiter::new(limits.rate, limits.burst, limits.abuse);
        Self {
            state,
            principal,
            handle,
            limiter,
            entered: HashMap::new(),
            known: HashMap::new(),
            subscribed: HashMap::new(),
            last_seen: Instant::now(),
        }
    }

    async fn run(&mut self, mut inbound: Inbound<SocketChunks>) {
        metrics::gauge!("chatnode_connections", "transport" => "ws").increment(1.0);
        let settings = self.state.settings.clone();
        let heartbeat = Duration::from_secs(settings.ws.heartbeat_secs);
        let hello = encode(&ServerFrame::Hello {
            user: self.principal.user.as_str(),
            node: settings.node_id,
            proto: 1,
            heartbeat: settings.ws.heartbeat_secs,
            limits: HelloLimits {
                frame: settings.limits.frame,
                text: settings.limits.text,
                rate: settings.limits.rate,
            },
        });
        let mut ending = if self.handle.send_bytes(hello) {
            self.event_loop(&mut inbound, heartbeat).await
        } else {
            Ending::SocketError
        };
        if ending == Ending::ClientClosed && self.state.shutdown.is_cancelled() {
            ending = Ending::Shutdown;
        }
        self.leave_everything();
        match ending.close_code() {
            Some(code) => {
                // Frames already queued go out first; a socket that never drains is abandoned.
                self.handle.finish(Some(Close {
                    code,
                    reason: ending.description(),
                }));
                let _ = tokio::time::timeout(CLOSE_WAIT, self.handle.writer_gone()).await;
            }
            None => self.handle.finish(None),
        }
        metrics::gauge!("chatnode_connections", "transport" => "ws").decrement(1.0);
        metrics::counter!("chatnode_connection_endings_total", "reason" => ending.as_str())
            .increment(1);
        tracing::debug!(user = %self.principal.user, reason = ending.as_str(), "connection ended");
    }

    /// Reads until the connection must end. The futures that wait for shutdown, for trouble
    /// on the writing side and for the timer live across iterations, so waiting costs no
    /// re-registration; a request's handling is boxed so that it does not weigh on the size of
    /// this (mostly idle) future.
    async fn event_loop(
        &mut self,
        inbound: &mut Inbound<SocketChunks>,
        heartbeat: Duration,
    ) -> Ending {
        let leeway = self.state.verifier.leeway_secs() as i64;
        let expires_in_ms = (self.principal.exp + leeway) * 1000 - now_ms();
        let expiry =
            tokio::time::Instant::now() + Duration::from_millis(expires_in_ms.max(0) as u64);
        let mut next_ping = tokio::time::Instant::now() + heartbeat;
        let shutdown_token = self.state.shutdown.clone();
        let mut shutdown = pin!(shutdown_token.cancelled());
        let handle = self.handle.clone();
        let mut trouble = pin!(handle.trouble());
        let mut timer = pin!(tokio::time::sleep_until(next_ping.min(expiry)));
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ending::Shutdown,
                found = &mut trouble => return match found {
                    Trouble::Overflowed => Ending::SlowConsumer,
                    // The socket closed under the writer: the client went away.
                    Trouble::WriterGone => Ending::ClientClosed,
                    Trouble::RoomLost => Ending::RoomLost,
                },
                _ = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if now >= expiry {
                        return Ending::TokenExpired;
                    }
                    if now >= next_ping {
                        if self.last_seen.elapsed() >= heartbeat * 2 {
                            return Ending::Silent;
                        }
                        self.handle.control(Control::Ping);
                        next_ping = now + heartbeat;
                    }
                    timer.as_mut().reset(next_ping.min(expiry));
                }
                message = inbound.next() => {
                    match message {
                        None => return Ending::ClientClosed,
                        Some(Err(ending)) => return ending,
                        Some(Ok(message)) => {
                            self.last_seen = Instant::now();
                            if let Some(ending) = Box::pin(self.on_message(message)).await {
                                return ending;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn on_message(&mut self, message: InFrame) -> Option<Ending> {
        match message {
            InFrame::Binary(bytes) => self.on_frame(&bytes).await,
            InFrame::Text(text) => {
                if std::str::from_utf8(&text).is_err() {
                    tracing::debug!("websocket protocol error: text frame is not UTF-8");
                    return Some(Ending::InvalidPayload);
                }
                metrics::counter!("chatnode_frames_in_total", "type" => "invalid").increment(1);
                self.reply_err(
                    None,
                    ErrorCode::BadFrame,
                    "frames must be binary MessagePack",
                );
                None
            }
            InFrame::Ping(payload) => {
                self.handle.control(Control::Pong(payload));
                None
            }
            InFrame::Pong => None,
            InFrame::Close => Some(Ending::CloseRequested),
        }
    }

    fn reply_err(&self, r: Option<u32>, code: ErrorCode, message: &str) {
        self.handle.send_bytes(encode_err(r, code, message));
    }

    fn reply(&self, frame: &ServerFrame<'_>) {
        self.handle.send(frame);
    }

    async fn on_frame(&mut self, bytes: &[u8]) -> Option<Ending> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Reject => {
                metrics::counter!("chatnode_rate_limited_total").increment(1);
                let r = crate::protocol::codec::request_r(bytes);
                self.reply_err(r, ErrorCode::RateLimited, "slow down: too many requests");
                return None;
            }
            Verdict::Abuse => {
                metrics::counter!("chatnode_rate_limited_total").increment(1);
                return Some(Ending::RateAbuse);
            }
        }
        let request = match decode_request(bytes, self.state.settings.limits.text) {
            Ok(request) => request,
            Err(e) => {
                metrics::counter!("chatnode_frames_in_total", "type" => "invalid").increment(1);
                self.reply_err(e.r, e.code, e.message);
                return None;
            }
        };
        metrics::counter!("chatnode_frames_in_total", "type" => request.kind()).increment(1);
        let r = crate::protocol::codec::request_r(bytes);
        if let Some(group) = request.group()
            && !self.principal.may_use(group)
        {
            self.reply_err(
                r,
                ErrorCode::Forbidden,
                "your token does not allow this group",
            );
            return None;
        }
        if let Err(e) = self.dispatch(request, r).await {
            self.reply_err(r, e.code, &e.message);
        }
        None
    }

    fn responder<T>(&self, r: Option<u32>) -> Responder<T> {
        Responder::Session {
            session: self.handle.clone(),
            r,
        }
    }

    fn cached_room(&self, key: &(GroupId, RoomId)) -> Option<Addr<RoomActor>> {
        self.entered
            .get(key)
            .or_else(|| self.known.get(key))
            .cloned()
    }

    /// Sends `msg` to a room, remembering its address for the next request.
    async fn send_to_room<M>(
        &mut self,
        group: GroupId,
        room: RoomId,
        msg: M,
    ) -> Result<(), ChatError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        RoomActor: actix::Handler<M>,
    {
        let key = (group, room);
        let cached = self.cached_room(&key);
        let addr = self
            .state
            .directory
            .deliver(&key.0, &key.1, cached, msg)
            .await?;
        if let Some(entered) = self.entered.get_mut(&key) {
            *entered = addr;
        } else {
            if self.known.len() >= ROOM_CACHE {
                self.known.clear();
            }
            self.known.insert(key, addr);
        }
        Ok(())
    }

    async fn dispatch(&mut self, request: Request, r: Option<u32>) -> Result<(), ChatError> {
        let service = self.principal.service;
        let user = self.principal.user.clone();
        match request {
            Request::Ping => self.reply(&ServerFrame::Pong { r }),
            Request::Sub { group } => {
                let addr = self.state.directory.group(&group).await?;
                addr.send(Subscribe {
                    session: self.handle.clone(),
                })
                .await?;
                self.subscribed.insert(group, addr);
                self.reply(&ServerFrame::Ok { r });
            }
            Request::Unsub { group } => {
                if let Some(addr) = self.subscribed.remove(&group) {
                    addr.do_send(Unsubscribe {
                        session: self.handle.id(),
                        user,
                    });
                }
                self.reply(&ServerFrame::Ok { r });
            }
            Request::Enter {
                group,
                room,
                since,
                limit,
            } => {
                let msg = Attach {
                    session: self.handle.clone(),
                    service,
                    since,
                    limit,
                    responder: self.responder(r),
                };
                let key = (group.clone(), room.clone());
                // Marked as entered first, so the address lands in `entered`.
                let cached = self.cached_room(&key);
                let addr = self
                    .state
                    .directory
                    .deliver(&group, &room, cached, msg)
                    .await?;
                self.known.remove(&key);
                self.entered.insert(key, addr);
            }
            Request::Leave { group, room } => {
                let key = (group, room);
                if let Some(addr) = self.entered.remove(&key) {
                    addr.send(Detach {
                        session: self.handle.id(),
                    })
                    .await?;
                    self.known.insert(key, addr);
                }
                self.reply(&ServerFrame::Ok { r });
            }
            Request::Send(send) => {
                let from = match send.from {
                    Some(from) if service => from,
                    Some(_) => {
                        return Err(ChatError::forbidden(
                            "only service tokens may send as another user",
                        ));
                    }
                    None => user,
                };
                // The token's name belongs to its user, not to someone a service sends as.
                let from_name = if from == self.principal.user {
                    self.principal.name.clone()
                } else {
                    None
                };
                let msg = PostMessage {
                    from,
                    from_name,
                    service,
                    kind: send.kind,
                    text: send.text,
                    media: send.media,
                    cmid: send.cmid,
                    responder: self.responder(r),
                };
                self.send_to_room(send.group, send.room, msg).await?;
            }
            Request::Read { group, room, id } => {
                let msg = MarkRead {
                    user,
                    id,
                    responder: self.responder(r),
                };
                self.send_to_room(group, room, msg).await?;
            }
            Request::History {
                group,
                room,
                before,
                limit,
            } => {
                let msg = GetHistory {
                    user,
                    service,
                    before,
                    limit,
                    responder: self.responder(r),
                };
                self.send_to_room(group, room, msg).await?;
            }
            Request::Typing { group, room } => {
                let msg = Typing {
                    session: self.handle.clone(),
                    r,
                };
                self.send_to_room(group, room, msg).await?;
            }
            Request::Edit {
                group,
                room,
                id,
                text,
            } => {
                let msg = EditMessage {
                    user,
                    id,
                    text,
                    responder: self.responder(r),
                };
                self.send_to_room(group, room, msg).await?;
            }
            Request::Delete { group, room, id } => {
                let msg = DeleteMessage {
                    user,
                    service,
                    id,
                    responder: self.responder(r),
                };
                self.send_to_room(group, room, msg).await?;
            }
        }
        Ok(())
    }

    /// Ends presence everywhere and unsubscribes (cursors are flushed by the rooms).
    fn leave_everything(&mut self) {
        for (_, addr) in self.entered.drain() {
            addr.do_send(Detach {
                session: self.handle.id(),
            });
        }
        for (_, addr) in self.subscribed.drain() {
            addr.do_send(Unsubscribe {
                session: self.handle.id(),
                user: self.principal.user.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    /// A client's frame: masked, as RFC 6455 requires from clients.
    fn client_frame(payload: &[u8], op: OpCode, fin: bool) -> Bytes {
        let mut buf = BytesMut::new();
        Parser::write_message(&mut buf, payload, op, fin, true);
        buf.freeze()
    }

    fn inbound(
        chunks: Vec<Bytes>,
        max: usize,
    ) -> Inbound<impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin> {
        Inbound::new(futures_util::stream::iter(chunks.into_iter().map(Ok)), max)
    }

    #[tokio::test]
    async fn frames_are_read_across_chunks_and_joined() {
        let one = client_frame(b"one", OpCode::Binary, true);
        let two = client_frame(b"two", OpCode::Binary, true);
        let mut both = BytesMut::from(&one[..]);
        both.extend_from_slice(&two[..3]);
        let first = client_frame(b"fr", OpCode::Binary, false);
        let last = client_frame(b"ag", OpCode::Continue, true);
        let ping = client_frame(b"p", OpCode::Ping, true);
        let mut input = inbound(vec![both.freeze(), two.slice(3..), first, ping, last], 64);
        let mut got = Vec::new();
        while let Some(frame) = input.next().await {
            got.push(match frame {
                Ok(InFrame::Binary(b)) => format!("bin {}", String::from_utf8_lossy(&b)),
                Ok(InFrame::Ping(b)) => format!("ping {}", String::from_utf8_lossy(&b)),
                Ok(_) => "other".to_owned(),
                Err(e) => format!("end {}", e.as_str()),
            });
        }
        assert_eq!(got, ["bin one", "bin two", "ping p", "bin frag"]);
        assert_eq!(input.buf.capacity(), 0, "a drained buffer is released");
    }

    #[tokio::test]
    async fn oversize_frames_end_before_they_are_buffered() {
        // Only the header of a 1 MiB frame has arrived: refused at once.
        let big = client_frame(&vec![0u8; 1 << 20], OpCode::Binary, true);
        let mut input = inbound(vec![big.slice(..16)], 4096);
        assert!(matches!(input.next().await, Some(Err(Ending::TooBig))));
        // Fragments that add up to more than the limit.
        let first = client_frame(&[1u8; 3000], OpCode::Binary, false);
        let last = client_frame(&[2u8; 3000], OpCode::Continue, true);
        let mut input = inbound(vec![first, last], 4096);
        assert!(matches!(input.next().await, Some(Err(Ending::TooBig))));
        // A client frame must be masked.
        let mut unmasked = BytesMut::new();
        Parser::write_message(&mut unmasked, b"x", OpCode::Binary, true, false);
        let mut input = inbound(vec![unmasked.freeze()], 4096);
        assert!(matches!(
            input.next().await,
            Some(Err(Ending::ProtocolError))
        ));
    }

    #[tokio::test]
    async fn the_writer_sends_control_then_queued_frames_then_close() {
        let user = UserId::parse("u").expect("id");
        let (handle, outbound) = SessionHandle::new(user, Transport::WebSocket, 8);
        let mut writer = WsWriter::new(outbound);
        assert!(handle.send_bytes(Bytes::from_static(b"a")));
        assert!(handle.send_bytes(Bytes::from_static(b"b")));
        handle.control(Control::Ping);
        handle.finish(Some(Close {
            code: close::SLOW_CONSUMER,
            reason: "slow",
        }));
        assert!(!handle.send_bytes(Bytes::from_static(b"late")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(chunk)) = writer.poll_chunk(&mut cx) else {
            panic!("one chunk");
        };
        let mut buf = BytesMut::from(&chunk[..]);
        let mut frames = Vec::new();
        while let Some((fin, op, data)) = Parser::parse(&mut buf, false, 1024).expect("valid") {
            assert!(fin);
            frames.push((op, data.map(|d| d.to_vec()).unwrap_or_default()));
        }
        assert_eq!(frames[0], (OpCode::Ping, Vec::new()));
        assert_eq!(frames[1], (OpCode::Binary, b"a".to_vec()));
        assert_eq!(frames[2], (OpCode::Binary, b"b".to_vec()));
        assert_eq!(frames[3].0, OpCode::Close);
        assert_eq!(frames[3].1[..2], close::SLOW_CONSUMER.to_be_bytes());
        assert_eq!(frames.len(), 4);
        assert!(matches!(writer.poll_chunk(&mut cx), Poll::Ready(None)));
        drop(writer);
        assert!(handle.is_closed());
        tokio::time::timeout(Duration::from_secs(1), handle.writer_gone())
            .await
            .expect("the writer's end is signalled");
    }
}
