//! Push settings over REST (docs/protocol.md §7): a user's devices (FCM registration tokens) and
//! per-room mutes. Both are plain store writes; the push actor reads them when it sends.
//!
//! Device tokens are credentials: they are checked for shape here and never logged.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::{Caller, group_of, room_of};
use crate::actors::room::GetRoomInfo;
use crate::error::ChatError;
use crate::ids::now_ms;
use crate::protocol::ErrorCode;
use crate::state::AppState;
use crate::store::{DeviceRecord, Platform};

/// FCM registration tokens are shorter than 4 KiB.
pub const MAX_TOKEN: usize = 4095;
/// Devices one user may have; registering one more forgets the least recently used.
pub const MAX_DEVICES: usize = 20;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// The FCM registration token of the app on this device.
    token: String,
    platform: Platform,
}

/// A token as FCM issues them: printable ASCII without spaces or `/` (it is a path segment of
/// `DELETE /v1/devices/{token}`), at most [`MAX_TOKEN`] bytes.
fn check_token(token: &str) -> Result<(), ApiError> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`token` must be 1..=4095 bytes",
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`token` must be printable ASCII without spaces or `/`",
        ));
    }
    Ok(())
}

/// `PUT /v1/devices`: registers (or refreshes) the caller's device for push.
#[utoipa::path(
    put,
    path = "/v1/devices",
    tag = "push",
    summary = "Register a device for push",
    request_body = DeviceBody,
    responses(
        (status = 204, description = "Registered; apps register again at every start, which refreshes `last used`"),
        (status = 400, description = "Bad token or platform", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 503, description = "The store is unavailable", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn put_device(
    Caller(principal): Caller,
    body: web::Json<DeviceBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_token(&body.token)?;
    let store = &state.deps.store;
    let user = principal.user;
    let known = store
        .devices_of(std::slice::from_ref(&user))
        .await
        .map_err(ChatError::from)?
        .into_iter()
        .next()
        .map(|(_, devices)| devices)
        .unwrap_or_default();
    if known.len() >= MAX_DEVICES && !known.iter().any(|d| d.token == body.token) {
        // Too many devices: the one not seen for the longest goes.
        if let Some(stale) = known.iter().min_by_key(|d| d.last_used) {
            store
                .delete_device(&user, &stale.token)
                .await
                .map_err(ChatError::from)?;
        }
    }
    let now = now_ms();
    store
        .put_device(
            &user,
            DeviceRecord {
                token: body.token,
                platform: body.platform,
                created: now,
                last_used: now,
            },
        )
        .await
        .map_err(ChatError::from)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /v1/devices/{token}`: the caller's device gets no more pushes.
#[utoipa::path(
    delete,
    path = "/v1/devices/{token}",
    tag = "push",
    summary = "Unregister a device",
    params(("token" = String, Path, description = "The device's FCM registration token")),
    responses(
        (status = 204, description = "Unregistered (also when it was not registered)"),
        (status = 400, description = "Bad token", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 503, description = "The store is unavailable", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn delete_device(
    Caller(principal): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    check_token(&token)?;
    state
        .deps
        .store
        .delete_device(&principal.user, &token)
        .await
        .map_err(ChatError::from)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    /// True: no pushes for this room (silent read notices still go out).
    muted: bool,
}

/// `PUT /v1/groups/{group}/rooms/{room}/mute` (members only).
#[utoipa::path(
    put,
    path = "/v1/groups/{group}/rooms/{room}/mute",
    tag = "push",
    summary = "Mute or unmute a room's pushes for the caller",
    request_body = MuteBody,
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Stored; leaving the room forgets it"),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not a member", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn mute(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    body: web::Json<MuteBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    // The room's actor knows its members (and a service token is no member).
    let addr = state.directory.room(&group, &room).await?;
    addr.send(GetRoomInfo {
        caller: principal.user.clone(),
        service: false,
    })
    .await
    .map_err(ChatError::from)??;
    state
        .deps
        .store
        .set_muted(&group, &room, &principal.user, body.muted)
        .await
        .map_err(ChatError::from)?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("dGVzdA:APA91b-x_y").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token(&"a".repeat(MAX_TOKEN)).is_ok());
        assert!(check_token(&"a".repeat(MAX_TOKEN + 1)).is_err());
        assert!(check_token("has space").is_err());
        assert!(check_token("a/b").is_err());
        assert!(check_token("é").is_err());
    }
}
