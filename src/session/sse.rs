//! Server-Sent Events (`GET /v1/groups/{group}/rooms/{room}/events`, docs/protocol.md §5).
//!
//! The stream is a present connection of the room, like a WebSocket that only listens: it is
//! attached to the `RoomActor` with a bounded queue of its own, and its events are the room's
//! §3.4 events as JSON (`event:` the type, `data:` the frame, `id:` the message id for `msg`).
//! Resuming with `Last-Event-ID` (or `?since=`) first replays the messages after it, up to the
//! room's latest id at the moment the stream attached; everything later arrives live, so nothing
//! is missed or sent twice. A comment line every heartbeat keeps proxies from closing an idle
//! stream. The stream ends on overflow (the client reconnects with `Last-Event-ID`), token
//! expiry and shutdown. A client that stops reading altogether is let go of like a stalled
//! WebSocket: once its socket has taken no byte for the WebSocket's close deadline (10 s), the
//! listener drops the connection (src/server/conn.rs).

use std::collections::VecDeque;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;

use super::handle::{Outbound, SessionHandle, SessionId, Transport, sse_event};
use crate::actors::room::{Attach, Detach, GetAfter, RoomActor};
use crate::actors::{OutMessage, Responder};
use crate::api::error::ApiError;
use crate::api::{answer, authenticate, group_of, room_of};
use crate::error::ChatError;
use crate::ids::{MessageId, now_ms};
use crate::protocol::ErrorCode;
use crate::protocol::codec::MAX_PAGE;
use crate::protocol::frame::{Id, ServerFrame};
use crate::state::AppState;

/// The most messages a resuming stream replays; older gaps are for `history`.
pub const MAX_REPLAY: usize = 5_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay the messages after this id first (like `Last-Event-ID`).
    since: Option<String>,
}

/// Ends the stream's presence when the client goes away (the stream is dropped).
struct Presence {
    room: Addr<RoomActor>,
    session: SessionId,
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.room.do_send(Detach {
            session: self.session,
        });
        metrics::gauge!("chatnode_connections", "transport" => "sse").decrement(1.0);
    }
}

struct StreamState {
    replay: VecDeque<Bytes>,
    outbound: Outbound,
    heartbeat: tokio::time::Interval,
    shutdown: tokio_util::sync::CancellationToken,
    expiry: tokio::time::Instant,
    _presence: Presence,
}

fn msg_event(group: &str, room: &str, out: &OutMessage) -> Bytes {
    let m = &out.msg;
    sse_event(&ServerFrame::Msg {
        group,
        room,
        id: Id(m.id),
        from: m.from.as_str(),
        kind: m.kind,
        text: m.text.as_deref(),
        media: m.media.as_ref(),
        ts: m.ts,
        unread: out.unread,
        cmid: m.cmid.as_deref(),
    })
}

fn parse_since(req: &HttpRequest, query: &EventsQuery) -> Result<Option<MessageId>, ApiError> {
    let raw = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.since.clone());
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                "`Last-Event-ID` / `since` must be a message id",
            )
        }),
    }
}

/// `GET /v1/groups/{group}/rooms/{room}/events`
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/rooms/{room}/events",
    tag = "messages",
    summary = "Live events of a room (Server-Sent Events)",
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id"), EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this message id")),
    responses(
        (status = 200, description = "`text/event-stream` of the room's events as JSON", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn events(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&req, &state)?;
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let since = parse_since(&req, &query)?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the node is shutting down; connect to another",
        ));
    }
    let settings = &state.settings;
    let (handle, outbound) = SessionHandle::new(
        principal.user.clone(),
        Transport::Sse,
        settings.limits.outbound_queue,
    );
    let (responder, rx) = Responder::channel();
    let addr = state
        .directory
        .deliver(
            &group,
            &room,
            None,
            Attach {
                session: handle.clone(),
                service: principal.service,
                since,
                limit: MAX_PAGE,
                responder,
            },
        )
        .await?;
    metrics::gauge!("chatnode_connections", "transport" => "sse").increment(1.0);
    let presence = Presence {
        room: addr.clone(),
        session: handle.id(),
    };
    let entered = answer(rx).await?;

    // The replay: the messages after `since` up to the latest id at attach time.
    let mut replay = VecDeque::new();
    replay.push_back(Bytes::from_static(b"retry: 3000\n\n"));
    if let Some(since) = since {
        let latest = entered.latest;
        let mut last = since;
        let mut batch = entered.msgs;
        let mut more = entered.more;
        let mut replayed = 0;
        loop {
            for out in batch.iter().filter(|o| o.msg.id <= latest) {
                replay.push_back(msg_event(group.as_str(), room.as_str(), out));
                last = out.msg.id;
                replayed += 1;
            }
            if !more || last >= latest || replayed >= MAX_REPLAY {
                break;
            }
            let (responder, rx) = Responder::channel();
            addr.send(GetAfter {
                user: principal.user.clone(),
                service: principal.service,
                since: last,
                limit: MAX_PAGE,
                responder,
            })
            .await
            .map_err(ChatError::from)?;
            let page = answer(rx).await?;
            batch = page.msgs;
            more = page.more;
        }
    }

    // A stream whose client went away is noticed at the next write: keep-alives at least every
    // 10 s bound how long such a stream still counts as present.
    let heartbeat_every = Duration::from_secs(settings.ws.heartbeat_secs.clamp(1, 10));
    let leeway = state.verifier.leeway_secs() as i64;
    let expires_in = ((principal.exp + leeway) * 1000 - now_ms()).max(0) as u64;
    let stream_state = StreamState {
        replay,
        outbound,
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + heartbeat_every,
            heartbeat_every,
        ),
        shutdown: state.shutdown.clone(),
        expiry: tokio::time::Instant::now() + Duration::from_millis(expires_in),
        _presence: presence,
    };
    let stream = futures_util::stream::unfold(stream_state, |mut st| async move {
        if let Some(bytes) = st.replay.pop_front() {
            return Some((Ok::<_, actix_web::Error>(bytes), st));
        }
        tokio::select! {
            biased;
            _ = st.shutdown.cancelled() => None,
            // Overflow or a lost room (the writer is this stream, so never gone while it runs).
            _ = st.outbound.handle().trouble() => None,
            _ = tokio::time::sleep_until(st.expiry) => None,
            item = st.outbound.recv() => item.map(|bytes| (Ok(bytes), st)),
            _ = st.heartbeat.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}
