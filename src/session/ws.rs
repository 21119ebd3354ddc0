//! The WebSocket endpoint (`GET /v1/ws`, PROTOCOL.md §3) and the per-connection loop.
//!
//! The token is checked before the upgrade (401 otherwise). Each connection then runs as one
//! task on the worker that accepted it: it reads frames, decodes and rate-limits them, routes
//! requests to room and group actors (waiting only for mailbox room, never for a reply), and
//! writes the frames that actors queued for it, many per wake-up so the socket is flushed per
//! batch. It ends on close, silence for two heartbeats, token expiry (4001), a full outbound
//! queue (4008), rate-limit abuse (4009), an oversize frame (1009) or node shutdown (1001).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use bytes::Bytes;
use futures_util::StreamExt;

use super::handle::{Outbound, SessionHandle, Transport};
use super::ratelimit::{RateLimiter, Verdict};
use crate::actors::Responder;
use crate::actors::group::{GroupActor, Subscribe, Unsubscribe};
use crate::actors::room::{
    Attach, DeleteMessage, Detach, EditMessage, GetHistory, MarkRead, PostMessage, RoomActor,
    Typing,
};
use crate::api::authenticate;
use crate::auth::Principal;
use crate::error::ChatError;
use crate::ids::{GroupId, RoomId, now_ms};
use crate::protocol::frame::HelloLimits;
use crate::protocol::{ErrorCode, Request, ServerFrame, decode_request, encode, encode_err};
use crate::state::AppState;

/// Close codes of §3.4.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_ABUSE: u16 = 4009;
}

/// Most frames written per wake-up before the loop looks at its socket again.
const WRITE_BATCH: usize = 64;
/// How long a close frame may wait for a socket that does not drain.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Room addresses a connection remembers for rooms it has not entered.
const ROOM_CACHE: usize = 64;

/// `GET /v1/ws`: authenticates, upgrades, and starts the connection's task.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "websocket",
    summary = "WebSocket upgrade (binary MessagePack frames, PROTOCOL.md §3)",
    params(("token" = Option<String>, Query, description = "The JWT, for clients that cannot set headers")),
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 503, description = "The node is shutting down", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let principal = authenticate(&req, &state)?;
    if state.shutdown.is_cancelled() {
        return Ok(crate::api::error::error_response(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the node is shutting down; connect to another",
        ));
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let limits = &state.settings.limits;
    let stream = stream
        .max_frame_size(limits.frame)
        .aggregate_continuations()
        .max_continuation_size(limits.frame);
    let (handle, outbound) = SessionHandle::new(
        principal.user.clone(),
        Transport::WebSocket,
        limits.outbound_queue,
    );
    let state = state.into_inner();
    let tracker = state.connections.clone();
    // The stream is !Send: the task stays on the worker that accepted the request.
    actix_web::rt::spawn(tracker.track_future(async move {
        let mut conn = Connection::new(state, principal, handle);
        conn.run(session, stream, outbound).await;
    }));
    Ok(response)
}

/// How a connection ended, for logs and the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    ClientClosed,
    Silent,
    Shutdown,
    TokenExpired,
    SlowConsumer,
    RateAbuse,
    TooBig,
    SocketError,
}

impl Ending {
    fn close_code(self) -> Option<u16> {
        match self {
            Self::Shutdown => Some(close::GOING_AWAY),
            Self::TokenExpired => Some(close::TOKEN_EXPIRED),
            Self::SlowConsumer => Some(close::SLOW_CONSUMER),
            Self::RateAbuse => Some(close::RATE_ABUSE),
            Self::TooBig => Some(close::TOO_BIG),
            Self::ClientClosed | Self::Silent | Self::SocketError => None,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Shutdown => "the node is shutting down",
            Self::TokenExpired => "the token expired",
            Self::SlowConsumer => "the connection could not keep up; recover with enter since",
            Self::RateAbuse => "repeated abuse of the rate limit",
            Self::TooBig => "frame over the frame limit",
            Self::ClientClosed => "closed by the client",
            Self::Silent => "silent for two heartbeats",
            Self::SocketError => "socket error",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Silent => "silent",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::SlowConsumer => "slow_consumer",
            Self::RateAbuse => "rate_abuse",
            Self::TooBig => "too_big",
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

    async fn run(
        &mut self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        mut outbound: Outbound,
    ) {
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
        let mut ending = if session.binary(hello).await.is_err() {
            Ending::SocketError
        } else {
            self.event_loop(&mut session, &mut stream, &mut outbound, heartbeat)
                .await
        };
        if ending == Ending::ClientClosed && self.state.shutdown.is_cancelled() {
            ending = Ending::Shutdown;
        }
        self.leave_everything();
        if let Some(code) = ending.close_code() {
            // Frames already queued go out first; a socket that never drains is abandoned.
            let close = async {
                while let Ok(frame) = outbound.rx.try_recv() {
                    if session.binary(frame).await.is_err() {
                        return;
                    }
                }
                let reason = CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(ending.description().into()),
                };
                let _ = session.close(Some(reason)).await;
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
        }
        metrics::gauge!("chatnode_connections", "transport" => "ws").decrement(1.0);
        metrics::counter!("chatnode_connection_endings_total", "reason" => ending.as_str())
            .increment(1);
        tracing::debug!(user = %self.principal.user, reason = ending.as_str(), "connection ended");
    }

    async fn event_loop(
        &mut self,
        session: &mut actix_ws::Session,
        stream: &mut actix_ws::AggregatedMessageStream,
        outbound: &mut Outbound,
        heartbeat: Duration,
    ) -> Ending {
        let leeway = self.state.verifier.leeway_secs() as i64;
        let expires_in_ms = (self.principal.exp + leeway) * 1000 - now_ms();
        let expiry =
            tokio::time::Instant::now() + Duration::from_millis(expires_in_ms.max(0) as u64);
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        let shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ending::Shutdown,
                _ = outbound.overflow.overflowed() => return Ending::SlowConsumer,
                _ = tokio::time::sleep_until(expiry) => return Ending::TokenExpired,
                frame = outbound.rx.recv() => {
                    let Some(frame) = frame else { return Ending::SocketError };
                    if let Err(ending) = self.write_batch(session, outbound, frame).await {
                        return ending;
                    }
                }
                message = stream.next() => {
                    match message {
                        None => return Ending::ClientClosed,
                        Some(Ok(message)) => {
                            self.last_seen = Instant::now();
                            if let Some(ending) = self.on_message(session, message).await {
                                return ending;
                            }
                        }
                        Some(Err(ProtocolError::Overflow)) => return Ending::TooBig,
                        Some(Err(ProtocolError::Io(e))) if e.to_string().contains("maximum continuation size") => {
                            return Ending::TooBig;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket protocol error");
                            return Ending::SocketError;
                        }
                    }
                }
                _ = ticker.tick() => {
                    if self.last_seen.elapsed() >= heartbeat * 2 {
                        return Ending::Silent;
                    }
                    if session.ping(b"").await.is_err() {
                        return Ending::SocketError;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), so the socket is flushed
    /// once for many frames. A socket that stops draining while the queue overflows ends here.
    async fn write_batch(
        &mut self,
        session: &mut actix_ws::Session,
        outbound: &mut Outbound,
        first: Bytes,
    ) -> Result<(), Ending> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next.take() {
            tokio::select! {
                biased;
                result = session.binary(frame) => {
                    if result.is_err() {
                        return Err(Ending::SocketError);
                    }
                }
                _ = outbound.overflow.overflowed() => return Err(Ending::SlowConsumer),
            }
            written += 1;
            if written < WRITE_BATCH {
                next = outbound.rx.try_recv().ok();
            }
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        session: &mut actix_ws::Session,
        message: AggregatedMessage,
    ) -> Option<Ending> {
        match message {
            AggregatedMessage::Binary(bytes) => self.on_frame(&bytes).await,
            AggregatedMessage::Text(_) => {
                metrics::counter!("chatnode_frames_in_total", "type" => "invalid").increment(1);
                self.reply_err(
                    None,
                    ErrorCode::BadFrame,
                    "frames must be binary MessagePack",
                );
                None
            }
            AggregatedMessage::Ping(payload) => {
                if session.pong(&payload).await.is_err() {
                    return Some(Ending::SocketError);
                }
                None
            }
            AggregatedMessage::Pong(_) => None,
            AggregatedMessage::Close(_) => Some(Ending::ClientClosed),
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
