//! The OpenAPI 3 document of the REST API, generated from the handlers' own annotations
//! (utoipa) and served at `/v1/openapi.json`. A test checks it lists every REST route.

use actix_web::HttpResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{media, messages, ops, push, rooms};
use crate::session::{sse, ws};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatnode",
        description = "REST API of a chatnode node. The WebSocket protocol (binary MessagePack frames) is PROTOCOL.md §3; ids are decimal strings in JSON.",
    ),
    paths(
        rooms::create,
        rooms::list,
        rooms::get,
        rooms::delete,
        rooms::join,
        rooms::add_member,
        rooms::remove_member,
        messages::history,
        messages::send,
        media::upload,
        media::download,
        media::thumbnail,
        push::put_device,
        push::delete_device,
        push::mute,
        sse::events,
        ws::upgrade,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `GET /v1/openapi.json`
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
