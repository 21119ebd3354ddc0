//! Messages over REST (docs/protocol.md §4.3): history and send, with exactly the rules of the
//! WebSocket `history` and `send` because both go through the room's actor.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::{Caller, group_of, room_of};
use crate::actors::room::{GetHistory, PostMessage};
use crate::ids::UserId;
use crate::protocol::codec::{DEFAULT_PAGE, MAX_PAGE, check_cmid, check_text};
use crate::protocol::{ErrorCode, MessageKind};
use crate::state::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a smaller id.
    before: Option<u64>,
    /// Page size: default 50, above 200 is 200, 0 or less is `bad_request`.
    limit: Option<i64>,
}

/// `GET /v1/groups/{group}/rooms/{room}/messages?before=&limit=`
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/rooms/{room}/messages",
    tag = "messages",
    summary = "History of a room",
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id"), HistoryQuery),
    responses(
        (status = 200, description = "`{msgs, more}`, oldest first", body = crate::actors::PageReply),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn history(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(n) if n <= 0 => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`limit` must be at least 1",
            ));
        }
        Some(n) => (n as u64).min(MAX_PAGE as u64) as usize,
    };
    let page = super::ask_room(&state, &group, &room, |responder| GetHistory {
        user: principal.user.clone(),
        service: principal.service,
        before: query.before,
        limit,
        responder,
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    kind: MessageKind,
    text: Option<String>,
    media: Option<String>,
    cmid: String,
    /// Service tokens only: send as this user.
    from: Option<String>,
}

/// `POST /v1/groups/{group}/rooms/{room}/messages`: 201 with the `sent` object.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rooms/{room}/messages",
    tag = "messages",
    summary = "Send a message",
    request_body = SendBody,
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 201, description = "Durable; the `sent` object", body = crate::actors::SentInfo),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 413, description = "Text over the limit (`too_large`)", body = crate::api::error::Body),
        (status = 503, description = "The store is unavailable; nothing was stored", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn send(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    body: web::Json<SendBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let body = body.into_inner();
    let fail = |(code, message): (ErrorCode, &'static str)| ApiError::new(code, message);
    check_cmid(&body.cmid).map_err(fail)?;
    if let Some(text) = &body.text {
        check_text(text, state.settings.limits.text).map_err(fail)?;
    }
    match body.kind {
        MessageKind::Text if body.text.as_deref().is_none_or(str::is_empty) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`text` is required for text messages",
            ));
        }
        MessageKind::Image | MessageKind::Video | MessageKind::File
            if body.media.as_deref().is_none_or(str::is_empty) =>
        {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`media` is required for this kind",
            ));
        }
        _ => {}
    }
    let from = match body.from {
        Some(from) if principal.service => UserId::parse(&from)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("`from` {e}")))?,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only service tokens may send as another user",
            ));
        }
        None => principal.user.clone(),
    };
    let sent = super::ask_room(&state, &group, &room, |responder| PostMessage {
        from_name: (from == principal.user)
            .then(|| principal.name.clone())
            .flatten(),
        from,
        service: principal.service,
        kind: body.kind,
        text: body.text,
        media: body.media,
        cmid: body.cmid,
        responder,
    })
    .await?;
    Ok(HttpResponse::Created().json(sent))
}
