//! A local stand-in for FCM HTTP v1 and Google's OAuth2 token endpoint, on 127.0.0.1, for the
//! push tests (and `benches/push.rs`, which includes this file). It checks every request the
//! way the real services would and records it:
//!
//! - `POST /token`: the JWT bearer grant, whose assertion must be an RS256 JWT signed by the
//!   test service account's key, for this `aud` and `iss`, with the FCM scope. It answers a new
//!   access token (`mock-token-1`, `-2`, ...) valid for the configured `expires_in`.
//! - `POST /v1/projects/{project}/messages:send`: the bearer must be a token it issued that has
//!   not expired (401 otherwise), the project the key's, and the body what Google's reference
//!   of `messages:send` allows ([`check_google`]: known fields of the documented types only,
//!   string `data` values without the reserved keys `from`, `message_type`, `google*`, `gcm*`,
//!   exactly one target, payloads within 4096 bytes, APNs headers Apple takes), refused with
//!   400 `INVALID_ARGUMENT` and a field violation as FCM answers. Then it checks what chatnode
//!   itself promises apps ([`check_shape`]). A test can script the answers for a device token
//!   (503 with `Retry-After`, `UNREGISTERED`, ...).
//!
//! Anything that fails a check is recorded in `errors`, which tests expect to stay empty.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use serde_json::{Value, json};

pub const CLIENT_EMAIL: &str = "chatnode-push@test-project.iam.gserviceaccount.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// An RSA key pair made for the test, as PEM.
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TestKey {
    /// A fresh 2048-bit key (PKCS#8, as in Google's key files).
    pub fn generate() -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate an RSA key");
        let private = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("pkcs8");
        let public = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .expect("spki");
        Self {
            private_pem: pem("PRIVATE KEY", private.as_ref()),
            public_pem: pem("PUBLIC KEY", public.as_ref()),
        }
    }
}

/// A scripted answer for one send to a device token.
#[derive(Debug, Clone)]
pub enum Script {
    /// 503 with `Retry-After: secs`.
    Unavailable { retry_after: u64 },
    /// 429 without `Retry-After`.
    TooMany,
    /// 404 `UNREGISTERED`.
    Unregistered,
    /// 400 `INVALID_ARGUMENT` about the token.
    InvalidToken,
}

/// One send as the mock received it.
#[derive(Debug, Clone)]
pub struct Send {
    pub at: Instant,
    pub bearer: String,
    pub project: String,
    pub body: Value,
    /// The status the mock answered.
    pub status: u16,
}

impl Send {
    pub fn token(&self) -> &str {
        self.body["message"]["token"].as_str().unwrap_or_default()
    }

    pub fn data(&self, key: &str) -> &str {
        self.body["message"]["data"][key]
            .as_str()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    expires_in: u64,
    issued: HashMap<String, Instant>,
    token_requests: usize,
    sends: Vec<Send>,
    script: HashMap<String, VecDeque<Script>>,
    errors: Vec<String>,
    unauthorized: usize,
}

struct State {
    /// Keep no bodies (benchmarks).
    light: bool,
    project: String,
    token_uri: Mutex<String>,
    decoding: jsonwebtoken::DecodingKey,
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

/// The running mock. Dropping it leaves its thread to end with the process.
pub struct FcmMock {
    pub addr: SocketAddr,
    state: Arc<State>,
    pub key: TestKey,
}

impl FcmMock {
    /// Starts the mock for `project`, handing out access tokens valid `expires_in` seconds.
    pub fn start(project: &str, expires_in: u64) -> Self {
        Self::start_with(project, expires_in, false)
    }

    /// [`start`](Self::start); `bench` runs the mock's thread at the lowest priority and keeps
    /// only when each send came (not its body, though it is still checked), so that a
    /// benchmark's node is disturbed as little as possible by this stand-in for a remote
    /// service.
    pub fn start_with(project: &str, expires_in: u64, bench: bool) -> Self {
        let low_priority = bench;
        let key = TestKey::generate();
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_pem(key.public_pem.as_bytes()).expect("public key");
        let state = Arc::new(State {
            project: project.to_owned(),
            token_uri: Mutex::new(String::new()),
            decoding,
            inner: Mutex::new(Inner {
                expires_in,
                sends: Vec::with_capacity(if bench { 1 << 18 } else { 64 }),
                ..Inner::default()
            }),
            light: bench,
            changed: tokio::sync::Notify::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let server_state = state.clone();
        std::thread::spawn(move || {
            #[cfg(target_os = "linux")]
            if low_priority {
                use thread_priority::unix::{
                    NormalThreadSchedulePolicy, ThreadSchedulePolicy,
                    set_thread_priority_and_policy, thread_native_id,
                };
                let _ = set_thread_priority_and_policy(
                    thread_native_id(),
                    thread_priority::ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
                );
            }
            #[cfg(not(target_os = "linux"))]
            let _ = low_priority;
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let data = web::Data::new(server_state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .default_service(web::to(handle))
                })
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind the mock");
                let addr = server.addrs()[0];
                let _ = tx.send(addr);
                let _ = server.run().await;
            });
        });
        let addr = rx.recv().expect("the mock started");
        *state.token_uri.lock().expect("lock") = format!("http://{addr}/token");
        Self { addr, state, key }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Writes a service-account key file for this mock into `dir` and returns its path.
    pub fn write_key_file(&self, dir: &Path) -> std::path::PathBuf {
        let json = json!({
            "type": "service_account",
            "project_id": self.state.project,
            "private_key_id": "test-key-1",
            "private_key": self.key.private_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
            "universe_domain": "googleapis.com",
        });
        let path = dir.join("fcm-service-account.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("json")).expect("write key");
        path
    }

    /// The answers the next sends to `token` get, in order (then 200).
    pub fn script(&self, token: &str, answers: &[Script]) {
        self.inner()
            .script
            .entry(token.to_owned())
            .or_default()
            .extend(answers.iter().cloned());
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().expect("mock lock")
    }

    pub fn sends(&self) -> Vec<Send> {
        self.inner().sends.clone()
    }

    /// The sends to one device token.
    pub fn sends_to(&self, token: &str) -> Vec<Send> {
        self.inner()
            .sends
            .iter()
            .filter(|s| s.token() == token)
            .cloned()
            .collect()
    }

    pub fn send_count(&self) -> usize {
        self.inner().sends.len()
    }

    pub fn token_requests(&self) -> usize {
        self.inner().token_requests
    }

    pub fn unauthorized(&self) -> usize {
        self.inner().unauthorized
    }

    pub fn errors(&self) -> Vec<String> {
        self.inner().errors.clone()
    }

    /// Waits until `done` holds for the recorded sends, at most `within`.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Send]) -> bool) -> Vec<Send> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.state.changed.notified();
            {
                let inner = self.inner();
                if done(&inner.sends) {
                    return inner.sends.clone();
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let inner = self.inner();
                panic!(
                    "the mock did not see what was expected within {within:?}; it saw {} sends: {:#?}",
                    inner.sends.len(),
                    inner.sends.iter().map(|s| &s.body).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits for `n` sends to `token`.
    pub async fn wait_sends_to(&self, token: &str, n: usize, within: Duration) -> Vec<Send> {
        self.wait_for(within, |sends| {
            sends.iter().filter(|s| s.token() == token).count() >= n
        })
        .await
        .into_iter()
        .filter(|s| s.token() == token)
        .collect()
    }
}

fn fcm_error(status: u16, code: &str, message: &str, details: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).json(
        json!({
            "error": {"code": status, "message": message, "status": code, "details": details}
        }),
    )
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let response = if req.path() == "/token" {
        token(&state, &req, &body)
    } else if let Some(project) = req
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
    {
        send(&state, &req, project, &body)
    } else {
        let mut inner = state.inner.lock().expect("lock");
        inner
            .errors
            .push(format!("{} {}: unknown path", req.method(), req.path()));
        HttpResponse::NotFound().finish()
    };
    state.changed.notify_waiters();
    response
}

fn token(state: &State, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    #[derive(serde::Deserialize)]
    struct Form {
        grant_type: String,
        assertion: String,
    }
    #[derive(serde::Deserialize)]
    struct Claims {
        scope: String,
        iat: u64,
        exp: u64,
    }
    let mut inner = state.inner.lock().expect("lock");
    inner.token_requests += 1;
    let form_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if req.method() != actix_web::http::Method::POST || !form_type {
        inner.errors.push(format!(
            "token request: {} without a form content type",
            req.method()
        ));
        return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
    }
    let form: Form = match serde_urlencoded::from_bytes(body) {
        Ok(form) => form,
        Err(e) => {
            inner.errors.push(format!("token request: not a form: {e}"));
            return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
        }
    };
    if form.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        inner
            .errors
            .push(format!("token request: grant_type {}", form.grant_type));
        return HttpResponse::BadRequest().json(json!({"error": "unsupported_grant_type"}));
    }
    let token_uri = state.token_uri.lock().expect("lock").clone();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_uri]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Claims>(&form.assertion, &state.decoding, &validation)
    {
        Ok(data) => {
            if data.header.kid.as_deref() != Some("test-key-1") {
                inner
                    .errors
                    .push(format!("assertion: kid {:?}", data.header.kid));
            }
            data.claims
        }
        Err(e) => {
            inner.errors.push(format!("assertion refused: {e}"));
            return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
        }
    };
    // Google takes a space-separated list of scopes; FCM needs its own or cloud-platform's.
    let scoped = claims
        .scope
        .split(' ')
        .any(|s| s == SCOPE || s == "https://www.googleapis.com/auth/cloud-platform");
    if !scoped {
        inner
            .errors
            .push(format!("assertion: scope {:?}", claims.scope));
        return HttpResponse::BadRequest().json(json!({"error": "invalid_scope"}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if claims.exp <= claims.iat || claims.exp - claims.iat > 3600 || claims.iat > now + 60 {
        inner.errors.push(format!(
            "assertion: iat {} exp {} (now {now})",
            claims.iat, claims.exp
        ));
        return HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}));
    }
    let value = format!("mock-token-{}", inner.issued.len() + 1);
    let expires_in = inner.expires_in;
    inner.issued.insert(
        value.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    HttpResponse::Ok().json(json!({
        "access_token": value,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
}

/// Checks what chatnode promises apps in a push (after [`check_google`] passed): the data keys
/// of docs/protocol.md, decimal ids, one collapse key for Android and APNs; returns what is
/// wrong.
fn check_shape(body: &Value) -> Result<(), String> {
    let m = body.get("message").ok_or("no `message`")?;
    let token = m
        .get("token")
        .and_then(Value::as_str)
        .ok_or("no `message.token`")?;
    if token.is_empty() {
        return Err("empty token".into());
    }
    let data = m
        .get("data")
        .and_then(Value::as_object)
        .ok_or("no `message.data`")?;
    if let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("data.{k} is not a string"));
    }
    let field = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default();
    for k in ["group", "room", "message_id", "unread"] {
        if field(k).is_empty() {
            return Err(format!("data.{k} is missing"));
        }
    }
    for k in ["message_id", "unread"] {
        if !field(k).bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("data.{k} is not a decimal string"));
        }
    }
    let collapse = m["android"]["collapse_key"].as_str().unwrap_or_default();
    let apns = m["apns"]["headers"]["apns-collapse-id"]
        .as_str()
        .unwrap_or_default();
    if collapse.is_empty() || collapse != apns || apns.len() > 64 {
        return Err(format!("collapse keys {collapse:?} / {apns:?}"));
    }
    match field("type") {
        "message" => {
            if field("sender").is_empty() {
                return Err("data.sender is missing".into());
            }
            let n = m.get("notification").ok_or("no `notification`")?;
            if n["title"].as_str().is_none_or(str::is_empty) || n["body"].as_str().is_none() {
                return Err("notification without title or body".into());
            }
        }
        "read" => {
            let cursor = field("cursor");
            if cursor.is_empty() || !cursor.bytes().all(|b| b.is_ascii_digit()) {
                return Err("data.cursor is not a decimal string".into());
            }
            if m.get("notification").is_some() {
                return Err("a read notice with a notification".into());
            }
            if m["apns"]["payload"]["aps"]["content-available"] != 1 {
                return Err("a read notice without content-available".into());
            }
        }
        other => return Err(format!("data.type {other:?}")),
    }
    Ok(())
}

fn send(state: &State, req: &HttpRequest, project: &str, body: &[u8]) -> HttpResponse {
    let mut inner = state.inner.lock().expect("lock");
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let json_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) if json_type && req.method() == actix_web::http::Method::POST => v,
        _ => {
            inner.errors.push("send: not a JSON body".into());
            return fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
                json!([]),
            );
        }
    };
    let mut record = Send {
        at: Instant::now(),
        bearer: bearer.clone(),
        project: project.to_owned(),
        body,
        status: 200,
    };
    let valid_until = inner.issued.get(&bearer).copied();
    let response = if valid_until.is_none_or(|until| Instant::now() >= until) {
        inner.unauthorized += 1;
        record.status = 401;
        fcm_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        )
    } else if project != state.project {
        inner.errors.push(format!("send: project {project:?}"));
        record.status = 404;
        fcm_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            json!([]),
        )
    } else if let Err(v) = check_google(&record.body) {
        inner.errors.push(format!(
            "send refused as FCM would: {}: {}",
            v.field, v.description
        ));
        record.status = 400;
        fcm_error(
            400,
            "INVALID_ARGUMENT",
            &v.description,
            json!([{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": v.field, "description": v.description}],
            }]),
        )
    } else if let Err(problem) = check_shape(&record.body) {
        inner.errors.push(format!("send: {problem}"));
        record.status = 400;
        fcm_error(400, "INVALID_ARGUMENT", &problem, json!([]))
    } else {
        let scripted = inner
            .script
            .get_mut(record.token())
            .and_then(VecDeque::pop_front);
        match scripted {
            None => HttpResponse::Ok().json(json!({
                "name": format!("projects/{project}/messages/{}", inner.sends.len() + 1)
            })),
            Some(Script::Unavailable { retry_after }) => {
                record.status = 503;
                let mut resp =
                    fcm_error(503, "UNAVAILABLE", "The service is unavailable.", json!([]));
                resp.headers_mut().insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from(retry_after),
                );
                resp
            }
            Some(Script::TooMany) => {
                record.status = 429;
                fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", json!([]))
            }
            Some(Script::Unregistered) => {
                record.status = 404;
                fcm_error(
                    404,
                    "NOT_FOUND",
                    "Requested entity was not found.",
                    json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]),
                )
            }
            Some(Script::InvalidToken) => {
                record.status = 400;
                fcm_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]),
                )
            }
        }
    };
    if state.light {
        record.body = Value::Null;
    }
    inner.sends.push(record);
    response
}

/// How a field of FCM's `Message` resource is typed, as the `messages:send` reference gives it.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    StrList,
    /// A `map<string, string>`.
    StrMap,
    /// A `data` map: strings, and none of the keys FCM reserves.
    Data,
    /// A `google.protobuf.Struct`: any JSON object.
    Struct,
    /// An enum, by its value names (the JSON parser takes them in any case).
    Enum(&'static [&'static str]),
    /// A `google.protobuf.Duration`: decimal seconds with an `s`, as `"3.5s"`.
    Duration,
    Object(&'static [Field]),
}

/// A field by its proto name; the JSON parser also takes its lowerCamelCase form.
type Field = (&'static str, Kind);

const NOTIFICATION: &[Field] = &[
    ("title", Kind::Str),
    ("body", Kind::Str),
    ("image", Kind::Str),
];
const FCM_OPTIONS: &[Field] = &[("analytics_label", Kind::Str)];
const ANDROID_NOTIFICATION: &[Field] = &[
    ("title", Kind::Str),
    ("body", Kind::Str),
    ("icon", Kind::Str),
    ("color", Kind::Str),
    ("sound", Kind::Str),
    ("tag", Kind::Str),
    ("click_action", Kind::Str),
    ("body_loc_key", Kind::Str),
    ("body_loc_args", Kind::StrList),
    ("title_loc_key", Kind::Str),
    ("title_loc_args", Kind::StrList),
    ("channel_id", Kind::Str),
    ("ticker", Kind::Str),
    ("sticky", Kind::Bool),
    ("event_time", Kind::Str),
    ("local_only", Kind::Bool),
    (
        "notification_priority",
        Kind::Enum(&[
            "PRIORITY_UNSPECIFIED",
            "PRIORITY_MIN",
            "PRIORITY_LOW",
            "PRIORITY_DEFAULT",
            "PRIORITY_HIGH",
            "PRIORITY_MAX",
        ]),
    ),
    ("default_sound", Kind::Bool),
    ("default_vibrate_timings", Kind::Bool),
    ("default_light_settings", Kind::Bool),
    ("vibrate_timings", Kind::StrList),
    (
        "visibility",
        Kind::Enum(&["VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"]),
    ),
    ("notification_count", Kind::Int),
    ("light_settings", Kind::Struct),
    ("image", Kind::Str),
    ("bypass_proxy_notification", Kind::Bool),
    (
        "proxy",
        Kind::Enum(&["PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"]),
    ),
];
const ANDROID: &[Field] = &[
    ("collapse_key", Kind::Str),
    ("priority", Kind::Enum(&["NORMAL", "HIGH"])),
    ("ttl", Kind::Duration),
    ("restricted_package_name", Kind::Str),
    ("data", Kind::Data),
    ("notification", Kind::Object(ANDROID_NOTIFICATION)),
    ("fcm_options", Kind::Object(FCM_OPTIONS)),
    ("direct_boot_ok", Kind::Bool),
];
const APNS: &[Field] = &[
    ("headers", Kind::StrMap),
    ("payload", Kind::Struct),
    (
        "fcm_options",
        Kind::Object(&[("analytics_label", Kind::Str), ("image", Kind::Str)]),
    ),
    ("live_activity_token", Kind::Str),
];
const WEBPUSH: &[Field] = &[
    ("headers", Kind::StrMap),
    ("data", Kind::Data),
    ("notification", Kind::Struct),
    (
        "fcm_options",
        Kind::Object(&[("link", Kind::Str), ("analytics_label", Kind::Str)]),
    ),
];
const MESSAGE: &[Field] = &[
    ("name", Kind::Str),
    ("data", Kind::Data),
    ("notification", Kind::Object(NOTIFICATION)),
    ("android", Kind::Object(ANDROID)),
    ("webpush", Kind::Object(WEBPUSH)),
    ("apns", Kind::Object(APNS)),
    ("fcm_options", Kind::Object(FCM_OPTIONS)),
    ("token", Kind::Str),
    ("topic", Kind::Str),
    ("condition", Kind::Str),
];
const REQUEST: &[Field] = &[
    ("validate_only", Kind::Bool),
    ("message", Kind::Object(MESSAGE)),
];

/// FCM's limit on a message's payload (data and notification), in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// APNs' limit on a notification's payload, in bytes.
pub const MAX_APNS_PAYLOAD: usize = 4096;

/// A refusal as Google words it: the field path and what is wrong with it.
#[derive(Debug)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

fn violation(field: impl Into<String>, description: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        description: description.into(),
    }
}

/// `collapse_key` and `collapseKey` are one field to the JSON parser.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A data key FCM reserves: `from`, `message_type`, and anything starting `google` or `gcm`.
pub fn reserved_data_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower == "from"
        || lower == "message_type"
        || lower.starts_with("google")
        || lower.starts_with("gcm")
}

fn check_object(path: &str, value: &Value, fields: &[Field]) -> Result<(), Violation> {
    let object = value
        .as_object()
        .ok_or_else(|| violation(path, "Starting an object on a scalar field"))?;
    for (name, value) in object {
        let kind = fields
            .iter()
            .find(|(proto, _)| *proto == name || camel(proto) == *name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                violation(
                    path,
                    format!(
                        "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
                    ),
                )
            })?;
        let field = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        check_value(&field, value, kind)?;
    }
    Ok(())
}

fn check_value(field: &str, value: &Value, kind: Kind) -> Result<(), Violation> {
    let wrong = |what: &str| Err(violation(field, format!("Invalid value ({what} expected)")));
    match kind {
        Kind::Str if !value.is_string() => wrong("TYPE_STRING"),
        Kind::Bool if !value.is_boolean() => wrong("TYPE_BOOL"),
        Kind::Int
            if !(value.is_i64() || value.as_str().is_some_and(|s| s.parse::<i64>().is_ok())) =>
        {
            wrong("TYPE_INT32")
        }
        Kind::StrList => match value.as_array() {
            Some(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => wrong("a list of strings"),
        },
        Kind::StrMap | Kind::Data => {
            let map = value
                .as_object()
                .ok_or_else(|| violation(field, "Invalid value (a map expected)"))?;
            for (i, (k, v)) in map.iter().enumerate() {
                if !v.is_string() {
                    return Err(violation(
                        format!("{field}[{i}].value"),
                        format!("Invalid value at '{field}[{i}].value' (TYPE_STRING), {v}"),
                    ));
                }
                if matches!(kind, Kind::Data) && (k.is_empty() || reserved_data_key(k)) {
                    return Err(violation(
                        format!("{field}[{i}].key"),
                        format!("Invalid data payload key: {k:?} is reserved"),
                    ));
                }
            }
            Ok(())
        }
        Kind::Struct if !value.is_object() => wrong("an object"),
        Kind::Enum(names) => match value.as_str() {
            Some(s) if names.iter().any(|n| n.eq_ignore_ascii_case(s)) => Ok(()),
            _ => Err(violation(
                field,
                format!("Invalid value {value}: not one of {names:?}"),
            )),
        },
        Kind::Duration => {
            let ok = value
                .as_str()
                .and_then(|s| s.strip_suffix('s'))
                .is_some_and(|secs| {
                    let (whole, frac) = secs.split_once('.').unwrap_or((secs, "0"));
                    !whole.is_empty()
                        && whole.bytes().all(|b| b.is_ascii_digit())
                        && (1..=9).contains(&frac.len())
                        && frac.bytes().all(|b| b.is_ascii_digit())
                });
            if ok {
                Ok(())
            } else {
                wrong("a duration like \"3.5s\"")
            }
        }
        Kind::Object(fields) => check_object(field, value, fields),
        _ => Ok(()),
    }
}

/// The APNs rules FCM passes on: header values Apple accepts, and a background push that is one.
fn check_apns(apns: &Value) -> Result<(), Violation> {
    let header = |name: &str| apns["headers"][name].as_str();
    if let Some(priority) = header("apns-priority")
        && !["10", "5", "1"].contains(&priority)
    {
        return Err(violation(
            "message.apns.headers",
            format!("apns-priority {priority:?}"),
        ));
    }
    const PUSH_TYPES: &[&str] = &[
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
    ];
    if let Some(kind) = header("apns-push-type")
        && !PUSH_TYPES.contains(&kind)
    {
        return Err(violation(
            "message.apns.headers",
            format!("apns-push-type {kind:?}"),
        ));
    }
    if header("apns-collapse-id").is_some_and(|id| id.len() > 64) {
        return Err(violation(
            "message.apns.headers",
            "apns-collapse-id is over 64 bytes",
        ));
    }
    if header("apns-expiration")
        .is_some_and(|e| e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(violation(
            "message.apns.headers",
            "apns-expiration is not a UNIX time",
        ));
    }
    let aps = &apns["payload"]["aps"];
    if !(aps.is_null() || aps.is_object()) {
        return Err(violation(
            "message.apns.payload.aps",
            "aps is not a dictionary",
        ));
    }
    for (key, is_int) in [
        ("content-available", true),
        ("mutable-content", true),
        ("badge", true),
    ] {
        if let Some(v) = aps.get(key)
            && is_int
            && !v.is_u64()
        {
            return Err(violation(
                "message.apns.payload.aps",
                format!("{key} is not a number"),
            ));
        }
    }
    for key in ["thread-id", "category", "target-content-id"] {
        if aps.get(key).is_some_and(|v| !v.is_string()) {
            return Err(violation(
                "message.apns.payload.aps",
                format!("{key} is not a string"),
            ));
        }
    }
    if header("apns-push-type") == Some("background") {
        // Apple: a background notification has priority 5, content-available 1 and no alert,
        // sound or badge.
        if header("apns-priority") != Some("5") {
            return Err(violation(
                "message.apns.headers",
                "a background push needs apns-priority 5",
            ));
        }
        if aps.get("content-available").and_then(Value::as_u64) != Some(1) {
            return Err(violation(
                "message.apns.payload.aps",
                "a background push needs content-available 1",
            ));
        }
        if ["alert", "sound", "badge"]
            .iter()
            .any(|k| aps.get(*k).is_some())
        {
            return Err(violation(
                "message.apns.payload.aps",
                "a background push shows nothing",
            ));
        }
    }
    Ok(())
}

fn json_len(value: &Value) -> usize {
    if value.is_null() {
        0
    } else {
        serde_json::to_vec(value).map_or(0, |v| v.len())
    }
}

/// Checks a `messages:send` body as Google's reference for it says FCM does (every refusal is a
/// 400 `INVALID_ARGUMENT`): known fields of the right types only, string data without reserved
/// keys, exactly one target, the payload within 4096 bytes, and APNs settings Apple takes.
pub fn check_google(body: &Value) -> Result<(), Violation> {
    check_object("", body, REQUEST)?;
    let message = body
        .get("message")
        .ok_or_else(|| violation("message", "Required field is missing"))?;
    let targets: Vec<&str> = ["token", "topic", "condition"]
        .into_iter()
        .filter(|k| message.get(*k).is_some())
        .collect();
    if targets.len() != 1 {
        return Err(violation(
            "message",
            format!("exactly one of token, topic, condition is required; got {targets:?}"),
        ));
    }
    if message[targets[0]].as_str().is_none_or(str::is_empty) {
        return Err(violation(
            format!("message.{}", targets[0]),
            "The registration token is not a valid FCM registration token",
        ));
    }
    // Conservative reading of the limits: data and notification count once for FCM, and again
    // with the APNs payload they are delivered in.
    let payload = json_len(&message["data"]) + json_len(&message["notification"]);
    if payload > MAX_PAYLOAD {
        return Err(violation(
            "message",
            format!("Message is too big: {payload} bytes of data and notification"),
        ));
    }
    let apns = &message["apns"];
    if !apns.is_null() {
        check_apns(apns)?;
        let total = payload + json_len(&apns["payload"]);
        if total > MAX_APNS_PAYLOAD {
            return Err(violation(
                "message.apns.payload",
                format!("APNs payload too big: {total} bytes"),
            ));
        }
    }
    Ok(())
}
