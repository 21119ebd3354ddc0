//! Media over REST (docs/protocol.md §6): uploads into a room, downloads and thumbnails for the
//! room's members. The bytes go through [`crate::media::MediaStore`]; membership is the room
//! actor's answer ([`GetMembership`]); the media record is the store's.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, error_response};
use super::{Caller, group_of, room_of};
use crate::actors::room::GetMembership;
use crate::auth::Principal;
use crate::error::ChatError;
use crate::ids::{GroupId, RoomId, now_ms};
use crate::media::types::{
    RangeRequest, check_name, content_disposition, inline, is_media_id, kind_of, new_media_id,
    parse_content_type, parse_range,
};
use crate::media::{MediaError, MediaStore, UploadTarget};
use crate::protocol::{ErrorCode, MessageKind};
use crate::state::AppState;
use crate::store::MediaRecord;

/// What every media response carries: never let a browser guess a type, never run anything.
const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// `X-Content-Type-Options: nosniff` on every response of a media route, errors included
/// (those of the extractors too, such as a 401).
pub fn nosniff() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new().add(NOSNIFF)
}
const CSP: (&str, &str) = (
    "content-security-policy",
    "default-src 'none'; style-src 'unsafe-inline'; sandbox",
);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name as the uploader wants it shown (1..=255 bytes, no path).
    name: Option<String>,
}

/// The media object of docs/protocol.md §3.5, as an upload returns it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MediaView {
    /// 32 hex digits: use it as `media` in a `send`.
    id: String,
    /// The MIME type.
    #[serde(rename = "type")]
    content_type: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Added by this node: whether a thumbnail exists yet. Image thumbnails are made after the
    /// upload answers, so an upload always says `false`; messages say what was true when sent.
    thumbnail: bool,
}

/// Asks the room's actor whether the caller may see the room's content.
async fn check_member(
    state: &AppState,
    principal: &Principal,
    group: &GroupId,
    room: &RoomId,
) -> Result<(), ApiError> {
    let addr = state.directory.room(group, room).await?;
    addr.send(GetMembership {
        user: principal.user.clone(),
        service: principal.service,
    })
    .await
    .map_err(ChatError::from)??;
    Ok(())
}

fn media_error(e: MediaError) -> HttpResponse {
    match e {
        MediaError::TooLarge { .. } => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            &e.to_string(),
        ),
        MediaError::TypeMismatch { .. } => error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            &e.to_string(),
        ),
        MediaError::Empty => error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the body is empty: send the file as the request body",
        ),
        MediaError::Body(detail) => {
            tracing::info!(%detail, "upload interrupted");
            error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "the upload was interrupted",
            )
        }
        MediaError::Storage(_) | MediaError::Config(_) => {
            tracing::warn!(error = %e, "media storage failed");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "media storage is unavailable; nothing was stored, retry later",
            )
        }
    }
}

/// After a refusal the node reads (and drops) a little more of the body, so that a client
/// still sending sees the answer instead of a reset connection; larger bodies are cut off.
async fn drain(mut payload: web::Payload) {
    const DRAIN_BYTES: usize = 4 * 1024 * 1024;
    let mut drained = 0;
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
    tokio::pin!(deadline);
    while drained < DRAIN_BYTES {
        tokio::select! {
            chunk = payload.next() => match chunk {
                Some(Ok(bytes)) => drained += bytes.len(),
                _ => break,
            },
            _ = &mut deadline => break,
        }
    }
}

/// `POST /v1/groups/{group}/rooms/{room}/media?name=`: the raw file as the body.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rooms/{room}/media",
    tag = "media",
    summary = "Upload a file into a room",
    description = "The raw file is the body and its `Content-Type` says what it is: `image/*` is an image, `video/*` a video, anything else a file. The body is streamed to storage; its first bytes must not be recognised as another type (415): markup (HTML by the WHATWG MIME Sniffing patterns, XML, SVG) is recognised too, so it never passes as an image or any other type. Markup declared as what it is (`image/svg+xml`, `text/html`, other XML types) is kept but only ever served as an attachment. Size limits per kind come from configuration (413 `too_large`).",
    request_body(content = Vec<u8>, content_type = "*/*", description = "The file"),
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id"), UploadQuery),
    responses(
        (status = 201, description = "Stored: `{id, type, size, name?}`", body = MediaView),
        (status = 400, description = "Bad input (no Content-Type, empty body, bad name)", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not a member", body = crate::api::error::Body),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 413, description = "Over the kind's size limit (`too_large`); nothing was kept", body = crate::api::error::Body),
        (status = 415, description = "The bytes are another type than declared (`bad_request`)", body = crate::api::error::Body),
        (status = 503, description = "Storage unavailable; nothing was kept", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn upload(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    query: web::Query<UploadQuery>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let name = query.into_inner().name;
    if let Some(name) = &name {
        check_name(name).map_err(|m| ApiError::new(ErrorCode::BadRequest, m))?;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let content_type =
        parse_content_type(declared).map_err(|m| ApiError::new(ErrorCode::BadRequest, m))?;
    check_member(&state, &principal, &group, &room).await?;
    let media = &state.deps.media;
    let limit = media.limit(kind_of(&content_type));
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > limit) {
        let refusal = media_error(MediaError::TooLarge { limit });
        drain(payload).await;
        return Ok(refusal);
    }
    let id = new_media_id();
    let target = UploadTarget {
        key: MediaStore::object_key(&group, &room, &id),
        content_type: content_type.clone(),
        name: name.clone(),
        limit,
    };
    let mut payload = payload;
    let size = match media.upload(&target, &mut payload).await {
        Ok(size) => size,
        Err(e) => {
            let refusal = media_error(e);
            drain(payload).await;
            return Ok(refusal);
        }
    };
    let record = MediaRecord {
        id: id.clone(),
        group: group.clone(),
        room: room.clone(),
        uploader: principal.user.clone(),
        content_type: content_type.clone(),
        size,
        name: name.clone(),
        created: now_ms(),
        has_thumbnail: false,
    };
    if let Err(e) = state.deps.store.put_media(record.clone()).await {
        media.delete_objects(&group, &room, &id).await;
        return Err(ApiError(e.into()));
    }
    metrics::counter!("chatnode_media_uploads_total", "kind" => kind_of(&content_type).as_str())
        .increment(1);
    metrics::counter!("chatnode_media_upload_bytes_total").increment(size);
    media.spawn_thumbnail(state.deps.store.clone(), record);
    Ok(HttpResponse::Created().json(MediaView {
        id,
        content_type,
        size,
        name,
        thumbnail: false,
    }))
}

/// The media record, if the caller may see it (a member of its room).
async fn authorised_media(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<MediaRecord, ApiError> {
    let no_such = || ApiError::new(ErrorCode::NotFound, "no such media");
    if !is_media_id(id) {
        return Err(no_such());
    }
    let record = state
        .deps
        .store
        .get_media(id)
        .await
        .map_err(ChatError::from)?
        .ok_or_else(no_such)?;
    if !principal.may_use(&record.group) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "your token does not allow this group",
        ));
    }
    check_member(state, principal, &record.group, &record.room).await?;
    Ok(record)
}

/// Serves an object: a redirect to a signed URL (S3), or the bytes with range support.
async fn serve(
    state: &AppState,
    req: &HttpRequest,
    key: object_store::path::Path,
    content_type: &str,
    size: u64,
    disposition: String,
) -> Result<HttpResponse, ApiError> {
    let media = &state.deps.media;
    let unavailable = |e: MediaError| {
        tracing::warn!(error = %e, "media download failed");
        ApiError::new(
            ErrorCode::Unavailable,
            "media storage is unavailable; retry later",
        )
    };
    if let Some(url) = media
        .signed_url(&key, content_type, &disposition)
        .await
        .map_err(unavailable)?
    {
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "private, no-store"))
            .insert_header(NOSNIFF)
            .finish());
    }
    let range = match req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => parse_range(value, size),
        None => RangeRequest::Full,
    };
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeRequest::Unsatisfiable => {
            let mut resp = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BadRequest,
                "the range is outside the file",
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            resp.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            return Ok(resp);
        }
    };
    let stream = match media.read(&key, (size > 0).then_some(start..end)).await {
        Ok(stream) => stream,
        Err(MediaError::Storage(object_store::Error::NotFound { .. })) => {
            return Err(ApiError::new(ErrorCode::NotFound, "no such media"));
        }
        Err(e) => return Err(unavailable(e)),
    };
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=86400"))
        .insert_header(NOSNIFF)
        .insert_header(CSP);
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    Ok(builder.body(actix_web::body::SizedStream::new(end - start, stream)))
}

/// `GET /v1/media/{id}`
#[utoipa::path(
    get,
    path = "/v1/media/{id}",
    tag = "media",
    summary = "Download a file",
    description = "Members of the media's room only. The local backend streams the file (with `Range: bytes=` support, 206); the S3 backend redirects to a short-lived signed URL. Anything but images and videos is served as an attachment, and so are markup types such as `image/svg+xml`; every response has `X-Content-Type-Options: nosniff`.",
    params(("id" = String, Path, description = "Media id")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range of the file"),
        (status = 307, description = "S3 backend: the file at a signed URL (`Location`)"),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not a member of the media's room", body = crate::api::error::Body),
        (status = 404, description = "No such media", body = crate::api::error::Body),
        (status = 416, description = "The range is outside the file", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn download(
    Caller(principal): Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let record = authorised_media(&state, &principal, &path).await?;
    let key = MediaStore::object_key(&record.group, &record.room, &record.id);
    let disposition = content_disposition(inline(&record.content_type), record.name.as_deref());
    serve(
        &state,
        &req,
        key,
        &record.content_type,
        record.size,
        disposition,
    )
    .await
}

/// `GET /v1/media/{id}/thumbnail`
#[utoipa::path(
    get,
    path = "/v1/media/{id}/thumbnail",
    tag = "media",
    summary = "An image's thumbnail (JPEG)",
    description = "Made shortly after an image is uploaded; 404 until then (and for other kinds). Same rules as the download.",
    params(("id" = String, Path, description = "Media id")),
    responses(
        (status = 200, description = "The thumbnail", content_type = "image/jpeg"),
        (status = 307, description = "S3 backend: the thumbnail at a signed URL"),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not a member of the media's room", body = crate::api::error::Body),
        (status = 404, description = "No such media, or no thumbnail (yet)", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn thumbnail(
    Caller(principal): Caller,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let record = authorised_media(&state, &principal, &path).await?;
    if !record.has_thumbnail || kind_of(&record.content_type) != MessageKind::Image {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this media has no thumbnail (yet)",
        ));
    }
    let key = MediaStore::thumbnail_key(&record.group, &record.room, &record.id);
    let size = match state.deps.media.objects().head(&key).await {
        Ok(meta) => meta.size,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ApiError::new(ErrorCode::NotFound, "no thumbnail"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "thumbnail lookup failed");
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "media storage is unavailable; retry later",
            ));
        }
    };
    serve(
        &state,
        &req,
        key,
        "image/jpeg",
        size,
        content_disposition(true, None),
    )
    .await
}
