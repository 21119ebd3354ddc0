//! Rooms over REST (docs/protocol.md §4.2): create, list (the chat list), get, delete, join, and
//! member management. Changes to a live room go through its `RoomActor`, so its in-memory
//! state and the store never disagree.

use actix_web::{HttpResponse, web};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::{Caller, group_of, room_of};
use crate::actors::group::{LiveUnread, RoomCreated};
use crate::actors::room::{AddMember, DeleteRoom, GetRoomInfo, RemoveMember};
use crate::error::ChatError;
use crate::ids::{RoomId, UserId, now_ms};
use crate::protocol::ErrorCode;
use crate::protocol::frame::{Id, MessageSummary, summary_text};
use crate::state::AppState;
use crate::store::{CreateOutcome, MemberRecord, RoomKind, RoomRecord};

/// The longest room title, in characters.
const MAX_TITLE: usize = 200;
/// The most members a create request may name.
const MAX_INITIAL_MEMBERS: usize = 1000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    room: Option<String>,
    title: String,
    kind: RoomKind,
    #[serde(default)]
    members: Vec<String>,
    max: Option<u32>,
    password: Option<String>,
}

/// A room as `GET .../rooms/{room}` and create return it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomView {
    room: String,
    title: String,
    kind: RoomKind,
    owner: String,
    members: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    has_password: bool,
    created: i64,
}

impl RoomView {
    fn new(record: &RoomRecord, members: Vec<String>) -> Self {
        Self {
            room: record.room.to_string(),
            title: record.title.clone(),
            kind: record.kind,
            owner: record.owner.to_string(),
            members,
            max: record.max,
            has_password: record.password_hash.is_some(),
            created: record.created,
        }
    }
}

/// One entry of the chat list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ChatListItem {
    room: String,
    title: String,
    kind: RoomKind,
    members: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<MessageSummary>,
    unread: u64,
}

fn user_of(s: &str) -> Result<UserId, ApiError> {
    UserId::parse(s).map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("user {s:?}: {e}")))
}

/// The id of the direct room of two users: the same whoever asks, so it is unique per pair.
fn direct_room_id(a: &UserId, b: &UserId) -> RoomId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = Sha256::new();
    hasher.update(lo.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(hi.as_str().as_bytes());
    let digest = hex::encode(hasher.finalize());
    RoomId::parse(&format!("dm-{}", &digest[..40]))
        .unwrap_or_else(|_| unreachable!("hex digests are valid room ids"))
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    web::block(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|_| ChatError::new(ErrorCode::Internal, "internal error"))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| ChatError::new(ErrorCode::Internal, "internal error"))
    })
    .await
    .map_err(|_| ApiError(ChatError::unavailable()))?
    .map_err(ApiError)
}

async fn password_matches(hash: String, password: String) -> Result<bool, ApiError> {
    web::block(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .map_err(|_| ApiError(ChatError::unavailable()))
}

/// `POST /v1/groups/{group}/rooms`
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rooms",
    tag = "rooms",
    summary = "Create a room",
    request_body = CreateRoom,
    params(("group" = String, Path, description = "Group id")),
    responses(
        (status = 201, description = "Created; the caller is owner and member", body = RoomView),
        (status = 200, description = "The existing direct room of this pair", body = RoomView),
        (status = 409, description = "A room with that id exists", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    Caller(principal): Caller,
    path: web::Path<String>,
    body: web::Json<CreateRoom>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let group = group_of(&principal, &path)?;
    let body = body.into_inner();
    let title = body.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`title` must be 1..=200 characters",
        ));
    }
    if body.members.len() > MAX_INITIAL_MEMBERS {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "a room is created with at most 1000 members; add more afterwards",
        ));
    }
    let mut members: Vec<UserId> = vec![principal.user.clone()];
    for m in &body.members {
        let user = user_of(m)?;
        if !members.contains(&user) {
            members.push(user);
        }
    }
    if let Some(max) = body.max
        && (max == 0 || (members.len() as u64) > u64::from(max))
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "`max` must be at least the number of members",
        ));
    }
    let room = match body.kind {
        RoomKind::Direct => {
            if members.len() != 2 {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "a direct room has exactly two members: you and one other user",
                ));
            }
            if body.password.is_some() || body.max.is_some() {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "direct rooms take no password and no max",
                ));
            }
            direct_room_id(&members[0], &members[1])
        }
        RoomKind::Group | RoomKind::Open => match &body.room {
            Some(room) => room_of(room)?,
            None => RoomId::parse(&hex::encode(rand::random::<[u8; 12]>()))
                .unwrap_or_else(|_| unreachable!("hex is a valid room id")),
        },
    };
    let password_hash = match body.password {
        Some(_) if body.kind != RoomKind::Open => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "only open rooms take a password",
            ));
        }
        Some(p) if p.is_empty() || p.len() > 1024 => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`password` must be 1..=1024 bytes",
            ));
        }
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let created = now_ms();
    let record = RoomRecord {
        group: group.clone(),
        room: room.clone(),
        title,
        kind: body.kind,
        owner: principal.user.clone(),
        max: body.max,
        password_hash,
        created,
    };
    let records = members
        .iter()
        .map(|user| MemberRecord {
            user: user.clone(),
            cursor: 0,
            cursor_seq: 0,
            joined: created,
        })
        .collect();
    match state
        .deps
        .store
        .create_room(record.clone(), records)
        .await
        .map_err(ChatError::from)?
    {
        CreateOutcome::Created => {
            if let Ok(addr) = state.directory.group(&group).await {
                addr.do_send(RoomCreated {
                    room: room.clone(),
                    members: members.clone(),
                });
            }
            let names = members.iter().map(ToString::to_string).collect();
            Ok(HttpResponse::Created().json(RoomView::new(&record, names)))
        }
        CreateOutcome::Exists(existing) if existing.kind == RoomKind::Direct => {
            let addr = state.directory.room(&group, &room).await?;
            let info = addr
                .send(GetRoomInfo {
                    caller: principal.user.clone(),
                    service: principal.service,
                })
                .await
                .map_err(ChatError::from)??;
            let names = info.members.iter().map(ToString::to_string).collect();
            Ok(HttpResponse::Ok().json(RoomView::new(&info.record, names)))
        }
        CreateOutcome::Exists(_) => Err(ApiError::new(
            ErrorCode::Conflict,
            "a room with that id exists in this group",
        )),
    }
}

/// `GET /v1/groups/{group}/rooms`: the caller's chat list, most recent activity first.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/rooms",
    tag = "rooms",
    summary = "The caller's rooms in the group",
    params(("group" = String, Path, description = "Group id")),
    responses(
        (status = 200, description = "The chat list, most recent activity first", body = Vec<ChatListItem>),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn list(
    Caller(principal): Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let group = group_of(&principal, &path)?;
    let entries = state
        .deps
        .store
        .chat_list(&principal.user, &group)
        .await
        .map_err(ChatError::from)?;
    // The store's cursors lag the active rooms' by up to `rooms.cursor_flush_ms`: the counts of
    // active rooms come from their actors (a sender's own messages are read at once).
    let mut live = match state.directory.group(&group).await {
        Ok(addr) if !entries.is_empty() => addr
            .send(LiveUnread {
                user: principal.user.clone(),
                rooms: entries.iter().map(|e| e.record.room.clone()).collect(),
            })
            .await
            .unwrap_or_default(),
        _ => Default::default(),
    };
    let items: Vec<ChatListItem> = entries
        .into_iter()
        .map(|e| ChatListItem {
            unread: live.remove(&e.record.room).unwrap_or(e.unread),
            room: e.record.room.to_string(),
            title: e.record.title,
            kind: e.record.kind,
            members: e.members,
            last: e.last.map(|m| MessageSummary {
                id: Id(m.id),
                from: m.from.to_string(),
                kind: m.kind,
                text: m.text.as_deref().map(summary_text),
                ts: m.ts,
            }),
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

/// `GET /v1/groups/{group}/rooms/{room}` (members only).
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/rooms/{room}",
    tag = "rooms",
    summary = "A room, for its members",
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room", body = RoomView),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn get(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let addr = state.directory.room(&group, &room).await?;
    let info = addr
        .send(GetRoomInfo {
            caller: principal.user.clone(),
            service: principal.service,
        })
        .await
        .map_err(ChatError::from)??;
    let names = info.members.iter().map(ToString::to_string).collect();
    Ok(HttpResponse::Ok().json(RoomView::new(&info.record, names)))
}

/// `DELETE /v1/groups/{group}/rooms/{room}` (owner or service).
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/rooms/{room}",
    tag = "rooms",
    summary = "Delete a room",
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Deleted; present users get `room {kind: deleted}`"),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    super::ask_room(&state, &group, &room, |responder| DeleteRoom {
        caller: principal.user.clone(),
        service: principal.service,
        responder,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    password: Option<String>,
}

/// `POST /v1/groups/{group}/rooms/{room}/join` (`open` rooms; password if set).
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rooms/{room}/join",
    tag = "rooms",
    summary = "Join an open room",
    request_body = Option<JoinBody>,
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Joined"),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 409, description = "The room is full (`room_full`)", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn join(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    // The body is optional, but one that is there must be a valid `JoinBody`: a misspelt
    // `password` is an error, not a join without a password.
    let body: JoinBody = if body.iter().all(u8::is_ascii_whitespace) {
        JoinBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))?
    };
    let record = state
        .deps
        .store
        .get_room(&group, &room)
        .await
        .map_err(ChatError::from)?
        .ok_or_else(|| ApiError(ChatError::no_room()))?;
    if record.kind != RoomKind::Open {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only open rooms can be joined",
        ));
    }
    if let Some(hash) = record.password_hash {
        let given = body.password.unwrap_or_default();
        if !password_matches(hash, given).await? {
            return Err(ApiError::new(ErrorCode::BadPassword, "wrong password"));
        }
    }
    super::ask_room(&state, &group, &room, |responder| AddMember {
        caller: principal.user.clone(),
        service: principal.service,
        user: principal.user.clone(),
        join: true,
        responder,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    user: String,
}

/// `POST /v1/groups/{group}/rooms/{room}/members` (owner or service).
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rooms/{room}/members",
    tag = "rooms",
    summary = "Add a member",
    request_body = AddMemberBody,
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id")),
    responses(
        (status = 204, description = "Added; the new member's cursor starts at the latest message"),
        (status = 404, description = "No such room", body = crate::api::error::Body),
        (status = 409, description = "The room is full (`room_full`)", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn add_member(
    Caller(principal): Caller,
    path: web::Path<(String, String)>,
    body: web::Json<AddMemberBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let user = user_of(&body.user)?;
    super::ask_room(&state, &group, &room, |responder| AddMember {
        caller: principal.user.clone(),
        service: principal.service,
        user,
        join: false,
        responder,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `DELETE /v1/groups/{group}/rooms/{room}/members/{user}` (the user, the owner, or service).
#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/rooms/{room}/members/{user}",
    tag = "rooms",
    summary = "Remove a member",
    params(("group" = String, Path, description = "Group id"), ("room" = String, Path, description = "Room id"), ("user" = String, Path, description = "The member to remove")),
    responses(
        (status = 204, description = "Removed; their presence ends and a receipt up to the latest id goes to the room"),
        (status = 404, description = "No such room or member", body = crate::api::error::Body),
        (status = 400, description = "Bad input", body = crate::api::error::Body),
        (status = 401, description = "Missing or invalid token", body = crate::api::error::Body),
        (status = 403, description = "Not allowed", body = crate::api::error::Body)
    ),
    security(("bearer" = []))
)]
pub async fn remove_member(
    Caller(principal): Caller,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (group, room, user) = path.into_inner();
    let group = group_of(&principal, &group)?;
    let room = room_of(&room)?;
    let user = user_of(&user)?;
    super::ask_room(&state, &group, &room, |responder| RemoveMember {
        caller: principal.user.clone(),
        service: principal.service,
        user,
        responder,
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_room_ids_do_not_depend_on_order() {
        let a = UserId::parse("alice").expect("id");
        let b = UserId::parse("bob").expect("id");
        assert_eq!(direct_room_id(&a, &b), direct_room_id(&b, &a));
        assert_ne!(
            direct_room_id(&a, &b),
            direct_room_id(&a, &UserId::parse("carol").expect("id"))
        );
    }
}
