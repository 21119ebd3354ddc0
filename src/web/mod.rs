//! The chat page served at `/`: static files built into the binary with
//! `include_bytes!` (no build step at run time, no CDN), plus the two small routes the page needs
//! beyond the client contract (docs/protocol.md): `GET /v1/web/config` (what the page may offer)
//! and, on a developer's own machine only, `POST /v1/dev/login` (a token for a named user,
//! without `chatnode token`).
//!
//! The page itself lives in `web/static/` (plain JavaScript, committed as served; the MessagePack
//! library is vendored from npm into `web/static/vendor/`, checked against `web/package.json`
//! by the test script).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::auth;
use crate::ids::UserId;
use crate::protocol::ErrorCode;
use crate::state::AppState;

/// One file of the page.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// One entry of [`ASSETS`]: the URL path, the type, and the file under `web/static/`.
macro_rules! asset {
    ($path:literal, $type:literal, $file:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../web/static/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("/", "text/html; charset=utf-8", "index.html"),
    asset!("/app.js", "text/javascript; charset=utf-8", "app.js"),
    asset!("/app.css", "text/css; charset=utf-8", "app.css"),
    asset!(
        "/vendor/msgpack.min.js",
        "text/javascript; charset=utf-8",
        "vendor/msgpack.min.js"
    ),
    asset!("/icon.svg", "image/svg+xml", "icon.svg"),
];

/// The page may only load its own files, talk to this node, and show media from it (or from
/// the object store's signed URLs, which are other origins: hence `https:` for images/videos).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data: https:; media-src 'self' blob: https:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The built-in files with their ETags (computed once, at start).
pub struct Assets {
    files: Vec<(&'static Asset, String)>,
}

impl Assets {
    pub fn new() -> Self {
        let files = ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                (a, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect();
        Self { files }
    }

    fn find(&self, path: &str) -> Option<&(&'static Asset, String)> {
        self.files.iter().find(|(a, _)| a.path == path)
    }
}

impl Default for Assets {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves one built-in file, answering `If-None-Match` with 304.
async fn asset(req: HttpRequest, assets: web::Data<Assets>) -> HttpResponse {
    let Some((asset, etag)) = assets.find(req.path()) else {
        return crate::api::error::error_response(
            actix_web::http::StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such file",
        );
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        // Revalidate every time: the files change with the binary, and 304s are cheap.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if asset.path == "/" {
        response
            .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    }
    if fresh {
        return response.finish();
    }
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body)
}

/// What the page may offer, from `GET /v1/web/config` (no token needed).
#[derive(Serialize)]
struct PageConfig {
    dev_login: bool,
}

async fn page_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(PageConfig {
            dev_login: state.dev_login.is_some(),
        })
}

/// Mints tokens for `POST /v1/dev/login`. Holds the HS256 secret; never printed.
pub struct DevLogin {
    secret: Vec<u8>,
    ttl_secs: u64,
}

impl DevLogin {
    pub fn new(secret: Vec<u8>, ttl_secs: u64) -> Self {
        Self { secret, ttl_secs }
    }
}

impl std::fmt::Debug for DevLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevLogin")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevLoginRequest {
    user: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Serialize)]
struct DevLoginReply {
    token: String,
    user: String,
    /// Expiry, Unix seconds.
    exp: i64,
}

/// `POST /v1/dev/login {user, name?}` → `{token, user, exp}`; 404 unless `web.dev_login`.
async fn dev_login(
    state: web::Data<AppState>,
    body: web::Json<DevLoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let Some(login) = state.dev_login.as_ref() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "dev login is off (web.dev_login)",
        ));
    };
    let body = body.into_inner();
    let user = UserId::parse(&body.user)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("user {e}")))?;
    if body.name.as_ref().is_some_and(|n| n.len() > 64) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "name must be at most 64 bytes",
        ));
    }
    let token = auth::mint(
        &login.secret,
        user.as_str(),
        body.name.as_deref(),
        login.ttl_secs,
        false,
        None,
    )
    .map_err(|_| ApiError::new(ErrorCode::Internal, "could not mint a token"))?;
    tracing::info!(user = %user, "dev login");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DevLoginReply {
            token,
            user: user.as_str().to_owned(),
            exp: crate::ids::now_ms() / 1000 + login.ttl_secs as i64,
        }))
}

/// The page's routes: the files (when `web.enabled`), its config and the dev login.
pub fn routes(cfg: &mut web::ServiceConfig, state: &AppState) {
    cfg.route("/v1/web/config", web::get().to(page_config))
        .route("/v1/dev/login", web::post().to(dev_login));
    if state.settings.web.enabled {
        cfg.app_data(web::Data::new(Assets::new()));
        for a in ASSETS {
            cfg.route(a.path, web::get().to(asset));
        }
    }
}

/// Builds the dev-login minter when configured (validation has already checked it is allowed).
pub fn dev_login_of(
    state_secret: Option<&[u8]>,
    settings: &crate::config::WebSettings,
) -> Option<Arc<DevLogin>> {
    match (settings.dev_login, state_secret) {
        (true, Some(secret)) => Some(Arc::new(DevLogin::new(
            secret.to_vec(),
            settings.dev_login_ttl_secs,
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_an_etag_and_a_type() {
        let assets = Assets::new();
        for a in ASSETS {
            let (found, etag) = assets.find(a.path).expect("asset");
            assert!(!found.body.is_empty(), "{} is empty", a.path);
            assert_eq!(etag.len(), 26);
        }
        assert!(assets.find("/nope").is_none());
    }

    #[test]
    fn dev_login_debug_hides_the_secret() {
        let login = DevLogin::new(b"super-secret-value-of-32-bytes!!".to_vec(), 60);
        let shown = format!("{login:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}
