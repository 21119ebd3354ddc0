//! The HTTP side of the node on actix-web: authentication of every call, the route table, and
//! JSON error handling. One file per resource: [`rooms`], [`messages`], [`media`], [`push`]
//! (devices and mutes), [`ops`].

pub mod body;
pub mod docs;
pub mod error;
pub mod media;
pub mod messages;
pub mod ops;
pub mod push;
pub mod rooms;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::auth::{AuthError, Principal};
use crate::error::ChatError;
use crate::ids::{GroupId, RoomId};
use crate::protocol::ErrorCode;
use crate::state::AppState;
use error::{ApiError, error_response};

/// Verifies the caller's token: `Authorization: Bearer <jwt>` or `?token=<jwt>`.
pub fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    authenticate_head(req.head(), state)
}

/// [`authenticate`] on a request's head (the WebSocket upgrade has no `HttpRequest`).
pub fn authenticate_head(
    head: &actix_http::RequestHead,
    state: &AppState,
) -> Result<Principal, ApiError> {
    let authorization = head.headers().get(actix_web::http::header::AUTHORIZATION);
    let token = token_of(authorization, head.uri.query());
    state.verifier.verify(&token).map_err(|e| {
        let message = match e {
            AuthError::Missing => "a bearer token is required",
            AuthError::Expired => "the token has expired",
            AuthError::Invalid(_) | AuthError::Setup(_) => "the token is not valid",
        };
        ApiError::new(ErrorCode::Unauthorized, message)
    })
}

/// The token a request carries: an `Authorization: Bearer <jwt>` header's (the header wins when
/// it is a bearer one), else the query's `token`, else empty (which verifies as missing). Pure,
/// so the fuzz target `token` reaches it without a server.
pub fn token_of(
    authorization: Option<&actix_web::http::header::HeaderValue>,
    query: Option<&str>,
) -> String {
    #[derive(Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    let header = authorization.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(|t| t.trim().to_owned())
    });
    match header {
        Some(token) => token,
        None => serde_urlencoded::from_str::<TokenQuery>(query.unwrap_or_default())
            .ok()
            .and_then(|q| q.token)
            .unwrap_or_default(),
    }
}

/// The verified caller, as a handler argument. Listed first, it is extracted before any body,
/// so a request without a valid token gets 401 whatever else is wrong with it.
pub struct Caller(pub Principal);

impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => authenticate(req, state).map(Caller),
            None => Err(ApiError::new(ErrorCode::Internal, "internal error")),
        };
        std::future::ready(result)
    }
}

/// Parses the `{group}` and `{room}` path segments and checks the token allows the group.
pub fn group_of(principal: &Principal, group: &str) -> Result<GroupId, ApiError> {
    let group = GroupId::parse(group).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the group must be 1..=64 bytes of [A-Za-z0-9_.-]",
        )
    })?;
    if !principal.may_use(&group) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "your token does not allow this group",
        ));
    }
    Ok(group)
}

pub fn room_of(room: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(room).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the room must be 1..=64 bytes of [A-Za-z0-9_.-]",
        )
    })
}

/// Waits for an actor's answer through a oneshot.
pub async fn answer<T>(
    rx: tokio::sync::oneshot::Receiver<Result<T, ChatError>>,
) -> Result<T, ApiError> {
    match rx.await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError(ChatError::unavailable())),
    }
}

/// Asks a room's actor and waits for its answer: the one path from a REST handler to a room.
pub async fn ask_room<T, M>(
    state: &AppState,
    group: &GroupId,
    room: &RoomId,
    make: impl FnOnce(crate::actors::Responder<T>) -> M,
) -> Result<T, ApiError>
where
    T: crate::actors::WsReply,
    M: actix::Message<Result = ()> + Send + 'static,
    crate::actors::room::RoomActor: actix::Handler<M>,
{
    let (responder, rx) = crate::actors::Responder::channel();
    state
        .directory
        .deliver(group, room, None, make(responder))
        .await?;
    answer(rx).await
}

/// The error answer to a JSON body the `Json` extractor refused. Public for the fuzz target
/// `rest_json`, which checks every refused body gets a JSON error with a code.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => {
            ApiError::new(ErrorCode::TooLarge, "the request body is too large")
        }
        E::ContentType => ApiError::new(ErrorCode::BadRequest, "the body must be application/json"),
        E::Deserialize(e) => ApiError::new(ErrorCode::BadRequest, format!("invalid JSON: {e}")),
        _ => ApiError::new(ErrorCode::BadRequest, "the body could not be read"),
    };
    api.into()
}

fn query_error(err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::BadRequest, format!("invalid query: {err}")).into()
}

fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::BadRequest, format!("invalid path: {err}")).into()
}

/// The answer to a path the node does not serve (also for WebSocket handshakes elsewhere).
pub fn no_such_route() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
}

async fn not_found() -> HttpResponse {
    no_such_route()
}

/// The node's routes. `/metrics` is left out when it has its own listener.
pub fn routes(cfg: &mut web::ServiceConfig, state: &AppState) {
    let body_limit = state.settings.limits.http_body;
    cfg.app_data(
        web::JsonConfig::default()
            .limit(body_limit)
            .error_handler(|err, _req| json_error(err)),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PathConfig::default().error_handler(path_error))
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/v1/ws", web::get().to(crate::session::ws::upgrade))
    .route("/v1/openapi.json", web::get().to(docs::openapi_json))
    .service(
        web::scope("/v1/groups/{group}/rooms")
            .route("", web::post().to(rooms::create))
            .route("", web::get().to(rooms::list))
            .route("/{room}", web::get().to(rooms::get))
            .route("/{room}", web::delete().to(rooms::delete))
            .route("/{room}/join", web::post().to(rooms::join))
            .route("/{room}/members", web::post().to(rooms::add_member))
            .route(
                "/{room}/members/{user}",
                web::delete().to(rooms::remove_member),
            )
            .route("/{room}/messages", web::get().to(messages::history))
            .route("/{room}/messages", web::post().to(messages::send))
            .route("/{room}/events", web::get().to(crate::session::sse::events))
            .route("/{room}/mute", web::put().to(push::mute))
            .service(
                web::resource("/{room}/media")
                    .wrap(media::nosniff())
                    .route(web::post().to(media::upload)),
            ),
    )
    .service(
        web::resource("/v1/media/{id}")
            .wrap(media::nosniff())
            .route(web::get().to(media::download)),
    )
    .service(
        web::resource("/v1/media/{id}/thumbnail")
            .wrap(media::nosniff())
            .route(web::get().to(media::thumbnail)),
    )
    .route("/v1/devices", web::put().to(push::put_device))
    .route("/v1/devices/{token}", web::delete().to(push::delete_device));
    if state.settings.metrics_listen.is_none() {
        cfg.route("/metrics", web::get().to(ops::metrics));
    }
    crate::web::routes(cfg, state);
    cfg.default_service(web::to(not_found));
}
