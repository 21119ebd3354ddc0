//! The FCM HTTP v1 client: the service-account key, the OAuth2 access token it mints (JWT bearer
//! grant, RS256, cached and refreshed before it expires), and `messages:send` with retries.
//! Invariant: this file never imports actix; it is plain async code over one pooled `reqwest`
//! client (HTTP/2 when the server offers it through ALPN, HTTP/1.1 otherwise).
//!
//! Both URLs come from configuration: the FCM base URL from `push.fcm_endpoint`, the token URL
//! from the key file's `token_uri`, so tests point them at a local server.
//!
//! Outcomes of one request (FCM's documented errors):
//! - 2xx: sent.
//! - 429 and 5xx, a transport error or a timeout: retried with exponential backoff and jitter,
//!   waiting at least `Retry-After` when the answer has one, until the retry budget is spent.
//! - 404 `UNREGISTERED`, or 400 `INVALID_ARGUMENT` about the token: the device is gone and its
//!   token must be deleted.
//! - 401: the access token is refreshed and the request sent once more.
//! - anything else: failed, not retried.
//!
//! Invariant: no token (device or OAuth) ever reaches a log line or an error message; logs name
//! a device by [`token_digest`](crate::store::token_digest) at most.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The OAuth2 scope that lets a service account send FCM messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How long a minted assertion (and so the access token asked for) is valid: Google's maximum.
const ASSERTION_SECS: u64 = 3600;
/// The first retry waits about this long; each further one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One request (FCM or the token endpoint) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an error body that is read to learn why a push was refused.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why push could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push.fcm_key_file {path}: {problem}")]
    KeyFile { path: String, problem: String },
    #[error("push: cannot build the HTTP client: {0}")]
    Client(String),
}

/// The fields of a service-account JSON key that push needs.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    token_uri: String,
}

/// A parsed service-account key. `Debug` leaves the private key out.
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub token_uri: String,
    key_id: Option<String>,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads and checks a service-account JSON key file.
    pub fn load(path: &Path) -> Result<Self, PushError> {
        let problem = |problem: String| PushError::KeyFile {
            path: path.display().to_string(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| problem(format!("cannot be read: {e}")))?;
        Self::from_json(&bytes).map_err(problem)
    }

    /// Parses a service-account JSON key; the error says what is wrong, never the key.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "is not a service-account JSON key (line {}, column {}: {})",
                e.line(),
                e.column(),
                match e.classify() {
                    serde_json::error::Category::Data => "a field is missing or has the wrong type",
                    _ => "not valid JSON",
                }
            )
        })?;
        if let Some(kind) = &file.kind
            && kind != "service_account"
        {
            return Err(format!("has type {kind:?}, not \"service_account\""));
        }
        for (name, value) in [
            ("project_id", &file.project_id),
            ("client_email", &file.client_email),
        ] {
            if value.trim().is_empty() {
                return Err(format!("has an empty `{name}`"));
            }
        }
        if !file
            .project_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'))
        {
            return Err("has a `project_id` that cannot be part of a URL path".into());
        }
        if !(file.token_uri.starts_with("https://") || file.token_uri.starts_with("http://")) {
            return Err("has a `token_uri` that is not an http(s) URL".into());
        }
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| "has a `private_key` that is not an RSA private key in PEM".to_owned())?;
        Ok(Self {
            project_id: file.project_id,
            client_email: file.client_email,
            token_uri: file.token_uri,
            key_id: file.private_key_id.filter(|k| !k.is_empty()),
            key,
        })
    }

    /// The signed JWT of the bearer grant (RFC 7523) for `now` (Unix seconds).
    fn assertion(&self, now: u64) -> Result<String, jsonwebtoken::errors::Error> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// A cached access token. `Debug` is not derived: the value is a credential.
struct AccessToken {
    value: Arc<str>,
    /// Refreshed from here on (before it expires, so no request carries a stale token).
    refresh_at: Instant,
    expires_at: Instant,
}

/// The final outcome of a push, after retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// FCM says the token is no longer valid: delete the device.
    TokenInvalid,
    /// Not delivered; the reason is a metrics label.
    Failed(&'static str),
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Sent,
    TokenInvalid,
    Unauthorized,
    Retry {
        after: Option<Duration>,
        why: &'static str,
    },
    Failed(&'static str),
}

/// How the client is set up (from `PushSettings`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The FCM base URL, without the `/v1/...` path.
    pub endpoint: String,
    /// How long one push is retried before it is given up.
    pub retry_for: Duration,
    /// Idle connections kept per host (the push concurrency).
    pub pool: usize,
}

/// Sends FCM HTTP v1 messages for one project. Share it as `Arc<FcmClient>`.
pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    account: ServiceAccount,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    retry_for: Duration,
}

impl FcmClient {
    pub fn new(account: ServiceAccount, options: &ClientOptions) -> Result<Self, PushError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("chatnode/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(options.pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| PushError::Client(e.to_string()))?;
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            options.endpoint.trim_end_matches('/'),
            account.project_id
        );
        Ok(Self {
            http,
            send_url,
            account,
            token: tokio::sync::Mutex::new(None),
            retry_for: options.retry_for,
        })
    }

    pub fn project_id(&self) -> &str {
        &self.account.project_id
    }

    /// Sends one message body (`{"message": {...}}`), retrying as the module documentation
    /// says, for at most the configured retry time.
    pub async fn send(&self, body: Bytes) -> Outcome {
        let deadline = Instant::now() + self.retry_for;
        let mut retries = 0u32;
        let mut reauthorized = false;
        loop {
            let attempt = match self.access_token().await {
                Ok(token) => {
                    let attempt = self.send_once(&token, body.clone()).await;
                    if attempt == Attempt::Unauthorized {
                        self.forget_token(&token).await;
                    }
                    attempt
                }
                Err(attempt) => attempt,
            };
            let (after, why) = match attempt {
                Attempt::Sent => return Outcome::Sent,
                Attempt::TokenInvalid => return Outcome::TokenInvalid,
                Attempt::Failed(why) => return Outcome::Failed(why),
                Attempt::Unauthorized if !reauthorized => {
                    // The token was refused (revoked, or the clocks disagree): mint a new one.
                    reauthorized = true;
                    continue;
                }
                Attempt::Unauthorized => return Outcome::Failed("unauthorized"),
                Attempt::Retry { after, why } => (after, why),
            };
            let delay = match after {
                // FCM asks for at least this long; a little jitter spreads the herd.
                Some(after) => after + jitter(after / 10),
                None => backoff(retries),
            };
            if Instant::now() + delay > deadline {
                return Outcome::Failed("gave_up");
            }
            metrics::counter!("chatnode_push_retried_total", "reason" => why).increment(1);
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    async fn send_once(&self, token: &str, body: Bytes) -> Attempt {
        let started = Instant::now();
        let result = self
            .http
            .post(&self.send_url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let attempt = match result {
            Ok(resp) => classify(resp).await,
            Err(e) => {
                tracing::debug!(error = %without_url(&e), "FCM request failed");
                Attempt::Retry {
                    after: None,
                    why: if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                }
            }
        };
        metrics::histogram!("chatnode_push_request_seconds")
            .record(started.elapsed().as_secs_f64());
        attempt
    }

    /// The cached access token, or a new one when it is due for refresh. One caller refreshes
    /// while the others wait for it, so the token endpoint sees one request per refresh.
    async fn access_token(&self) -> Result<Arc<str>, Attempt> {
        let mut cached = self.token.lock().await;
        let now = Instant::now();
        if let Some(token) = cached.as_ref()
            && now < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        match self.fetch_token().await {
            Ok(token) => {
                let value = token.value.clone();
                *cached = Some(token);
                Ok(value)
            }
            // A refresh that fails early uses the old token while it is still valid.
            Err(attempt) => match cached.as_ref() {
                Some(token) if now < token.expires_at => Ok(token.value.clone()),
                _ => Err(attempt),
            },
        }
    }

    /// Drops the cached token if it is still `rejected`, so the next request mints a new one.
    async fn forget_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| &*t.value == rejected) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken, Attempt> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = self.account.assertion(now).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the OAuth2 assertion for FCM");
            Attempt::Failed("auth")
        })?;
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %without_url(&e), "the OAuth2 token endpoint cannot be reached");
                Attempt::Retry {
                    after: None,
                    why: "auth",
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            tracing::warn!(
                status = status.as_u16(),
                "the OAuth2 token endpoint refused the service account"
            );
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                Attempt::Retry {
                    after: retry_after(resp.headers()),
                    why: "auth",
                }
            } else {
                Attempt::Failed("auth")
            });
        }
        let token: TokenResponse = resp.json().await.map_err(|_| {
            tracing::warn!("the OAuth2 token endpoint answered without an access token");
            Attempt::Retry {
                after: None,
                why: "auth",
            }
        })?;
        if token.access_token.is_empty() {
            return Err(Attempt::Failed("auth"));
        }
        metrics::counter!("chatnode_push_token_refreshes_total").increment(1);
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(ASSERTION_SECS).max(1));
        // Refresh a fifth of the lifetime (at most five minutes) before it ends.
        let margin = (lifetime / 5).min(Duration::from_secs(300));
        Ok(AccessToken {
            value: token.access_token.into(),
            refresh_at: started + lifetime - margin,
            expires_at: started + lifetime,
        })
    }
}

/// An error's text without its URL (which holds no secret, but keeps logs short and stable).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// Up to `max` of random jitter.
fn jitter(max: Duration) -> Duration {
    max.mul_f64(rand::random::<f64>())
}

/// The wait before retry number `retries` (0 for the first): exponential with "equal jitter",
/// between half and all of `FIRST_BACKOFF * 2^retries`, capped at [`MAX_BACKOFF`].
pub fn backoff(retries: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << retries.min(16))
        .min(MAX_BACKOFF);
    full / 2 + jitter(full / 2)
}

/// `Retry-After` as a delay: seconds, or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

/// Reads an answer of FCM and decides what it means.
async fn classify(resp: reqwest::Response) -> Attempt {
    let status = resp.status().as_u16();
    let after = retry_after(resp.headers());
    let body = read_capped(resp).await;
    match status {
        200..=299 => Attempt::Sent,
        401 => Attempt::Unauthorized,
        429 => Attempt::Retry { after, why: "429" },
        500..=599 => Attempt::Retry { after, why: "5xx" },
        _ => classify_error(status, &body),
    }
}

async fn read_capped(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// A 4xx other than 401 and 429: is the token at fault?
fn classify_error(status: u16, body: &[u8]) -> Attempt {
    #[derive(Deserialize, Default)]
    struct Envelope {
        #[serde(default)]
        error: ErrorBody,
    }
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        status: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: Vec<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
    let error = envelope.error;
    let codes: Vec<&str> = error
        .details
        .iter()
        .filter_map(|d| d.get("errorCode").and_then(|c| c.as_str()))
        .collect();
    if codes.contains(&"UNREGISTERED") {
        return Attempt::TokenInvalid;
    }
    let invalid_argument =
        error.status == "INVALID_ARGUMENT" || codes.contains(&"INVALID_ARGUMENT");
    if status == 400 && invalid_argument {
        // Only an invalid argument about the token condemns the device; a bad payload is ours.
        let about_token = error.details.iter().any(|d| {
            d.get("fieldViolations")
                .and_then(|v| v.as_array())
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.get("field")
                            .and_then(|f| f.as_str())
                            .is_some_and(|f| f == "message.token")
                    })
                })
        }) || error
            .message
            .to_ascii_lowercase()
            .contains("registration token");
        if about_token {
            return Attempt::TokenInvalid;
        }
        return Attempt::Failed("invalid_argument");
    }
    match status {
        403 => Attempt::Failed("forbidden"),
        404 => Attempt::Failed("not_found"),
        _ => Attempt::Failed("rejected"),
    }
}

/// What a visible notification says.
pub struct Alert<'a> {
    pub title: &'a str,
    pub body: &'a str,
    /// The `data` map (FCM wants string values).
    pub data: &'a [(&'a str, &'a str)],
    /// Notifications of one room replace each other on the device (Android `collapse_key` and
    /// `tag`, APNs `apns-collapse-id` and `thread-id`).
    pub collapse_key: &'a str,
}

/// The body of a visible notification to `token`.
pub fn alert_body(token: &str, alert: &Alert<'_>) -> Bytes {
    let data: serde_json::Map<String, serde_json::Value> = alert
        .data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let message = json!({
        "message": {
            "token": token,
            "notification": {"title": alert.title, "body": alert.body},
            "data": data,
            "android": {
                "collapse_key": alert.collapse_key,
                "priority": "high",
                "notification": {"tag": alert.collapse_key},
            },
            "apns": {
                "headers": {
                    "apns-push-type": "alert",
                    "apns-collapse-id": alert.collapse_key,
                    "apns-priority": "10",
                },
                "payload": {"aps": {"thread-id": alert.collapse_key}},
            },
        }
    });
    Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
}

/// The body of a silent, data-only push to `token` (iOS wakes the app in the background).
pub fn silent_body(token: &str, data: &[(&str, &str)], collapse_key: &str) -> Bytes {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let message = json!({
        "message": {
            "token": token,
            "data": data,
            "android": {"collapse_key": collapse_key, "priority": "normal"},
            "apns": {
                "headers": {
                    "apns-push-type": "background",
                    "apns-priority": "5",
                    "apns-collapse-id": collapse_key,
                },
                "payload": {"aps": {"content-available": 1}},
            },
        }
    });
    Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_the_token_condemn_the_device_and_others_do_not() {
        let unregistered = br#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert_eq!(classify_error(404, unregistered), Attempt::TokenInvalid);
        let bad_token = br#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#;
        assert_eq!(classify_error(400, bad_token), Attempt::TokenInvalid);
        let field = br#"{"error":{"code":400,"message":"Invalid value","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}"#;
        assert_eq!(classify_error(400, field), Attempt::TokenInvalid);
        let payload = br#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            classify_error(400, payload),
            Attempt::Failed("invalid_argument")
        );
        assert_eq!(
            classify_error(403, b"not json"),
            Attempt::Failed("forbidden")
        );
        assert_eq!(classify_error(404, b""), Attempt::Failed("not_found"));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for retries in 0..20 {
            let full = FIRST_BACKOFF
                .saturating_mul(1u32 << retries.min(16))
                .min(MAX_BACKOFF);
            let d = backoff(retries);
            assert!(d >= full / 2 && d <= full, "{retries}: {d:?}");
        }
        assert!(backoff(30) <= MAX_BACKOFF);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().expect("header"));
        let d = retry_after(&headers).expect("a date");
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "soon".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn key_files_are_checked_without_echoing_the_key() {
        let err =
            ServiceAccount::from_json(b"{\"type\":\"service_account\"}").expect_err("missing");
        assert!(err.contains("not a service-account JSON key"), "{err}");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key": secret,
            "client_email": "a@b",
            "token_uri": "http://127.0.0.1:1/token",
        });
        let err = ServiceAccount::from_json(json.to_string().as_bytes()).expect_err("bad key");
        assert!(
            err.contains("private_key") && !err.contains("c2VjcmV0"),
            "{err}"
        );
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "p/../x",
            "private_key": secret,
            "client_email": "a@b",
            "token_uri": "http://127.0.0.1:1/token",
        });
        let err = ServiceAccount::from_json(json.to_string().as_bytes()).expect_err("bad project");
        assert!(err.contains("project_id"), "{err}");
    }

    #[test]
    fn bodies_have_the_fcm_v1_shape() {
        let body = alert_body(
            "tok",
            &Alert {
                title: "Alice",
                body: "hi",
                data: &[("group", "g"), ("unread", "3")],
                collapse_key: "g/r",
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let m = &v["message"];
        assert_eq!(m["token"], "tok");
        assert_eq!(m["notification"]["title"], "Alice");
        assert_eq!(m["data"]["unread"], "3");
        assert_eq!(m["android"]["collapse_key"], "g/r");
        assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "g/r");
        let silent = silent_body("tok", &[("type", "read")], "g/r");
        let v: serde_json::Value = serde_json::from_slice(&silent).expect("json");
        assert!(v["message"].get("notification").is_none());
        assert_eq!(
            v["message"]["apns"]["payload"]["aps"]["content-available"],
            1
        );
    }
}
