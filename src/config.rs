//! The settings tree: built-in defaults, then a TOML file, then `CHATNODE_*` environment
//! variables, validated once at start with messages that name the bad setting.
//! `config/default.toml` documents every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::ids::MAX_NODE_ID;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Scylla,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address and port the node listens on.
    pub listen: String,
    /// Where the embedded store, the generated secret and local media live.
    pub data_dir: PathBuf,
    /// This node's id in message ids (0..=1023).
    pub node_id: u16,
    /// `embedded` or `scylla`.
    pub store: StoreBackend,
    /// Serve `/metrics` on this separate address instead of the main listener.
    pub metrics_listen: Option<String>,
    /// Worker threads for HTTP and WebSocket connections (0: one per core).
    pub workers: usize,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub ws: WsSettings,
    pub rooms: RoomSettings,
    pub shutdown: ShutdownSettings,
    pub scylla: ScyllaSettings,
    pub media: MediaSettings,
    pub push: PushSettings,
    pub web: WebSettings,
}

/// ScyllaDB settings, used when `store = "scylla"` and by `chatnode migrate`.
/// Text settings also accept numbers, as environment variables such as
/// `CHATNODE_SCYLLA_REPLICATION=3` arrive as numbers.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSettings {
    /// Contact points, comma-separated `host:port`.
    #[serde(deserialize_with = "crate::store::scylla::settings::lenient_opt_string")]
    pub nodes: Option<String>,
    #[serde(deserialize_with = "crate::store::scylla::settings::lenient_string")]
    pub keyspace: String,
    /// The keyspace's replication, used by `chatnode migrate` when it creates the keyspace
    /// (NetworkTopologyStrategy): replicas in every datacenter (`"3"`) or per datacenter
    /// (`"dc1:3,dc2:2"`).
    #[serde(deserialize_with = "crate::store::scylla::settings::lenient_string")]
    pub replication: String,
    /// Consistency of reads and writes: `LOCAL_QUORUM`, `QUORUM`, `LOCAL_ONE`, ...
    pub consistency: String,
    /// Username for password authentication (none: no authentication).
    #[serde(deserialize_with = "crate::store::scylla::settings::lenient_opt_string")]
    pub username: Option<String>,
    /// Password for `username`. Never logged.
    #[serde(deserialize_with = "crate::store::scylla::settings::lenient_opt_string")]
    pub password: Option<String>,
    /// How long one request may take before it fails with `unavailable`, in milliseconds.
    pub request_timeout_ms: u64,
    /// Connect to the nodes over TLS (src/store/scylla/tls.rs).
    pub tls: bool,
    /// PEM bundle of the CA(s) that signed the nodes' certificates; required with `tls`.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for clusters that require client certificates.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Check that a node's certificate names the IP address connected to (the driver connects
    /// by address). `false` still verifies the chain against `tls_ca_file`.
    pub tls_verify_hostname: bool,
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        Self {
            nodes: None,
            keyspace: "chatnode".into(),
            replication: "3".into(),
            consistency: "LOCAL_QUORUM".into(),
            username: None,
            password: None,
            request_timeout_ms: 5_000,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_verify_hostname: true,
        }
    }
}

/// Debug without the password.
impl std::fmt::Debug for ScyllaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaSettings")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_verify_hostname", &self.tls_verify_hostname)
            .finish()
    }
}

/// Media storage settings (docs/protocol.md §6). S3 credentials are not settings: they come
/// from the standard `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// `local` (under `<data_dir>/media`) or `s3`.
    pub backend: String,
    /// The bucket, required with `s3`.
    pub s3_bucket: Option<String>,
    /// An S3-compatible endpoint (`http://` or `https://`); unset means AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers need;
    /// false means virtual-hosted style (`bucket.endpoint/key`), AWS's preference.
    pub s3_path_style: bool,
    /// Largest image upload, in bytes.
    pub image_max_bytes: u64,
    /// Largest video upload, in bytes.
    pub video_max_bytes: u64,
    /// Largest upload of any other type, in bytes.
    pub file_max_bytes: u64,
    /// How long a signed download URL of the S3 backend stays valid, in seconds.
    pub signed_url_secs: u64,
    /// The longer side of an image thumbnail, in pixels.
    pub thumbnail_px: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_path_style: false,
            image_max_bytes: 20 * 1024 * 1024,
            video_max_bytes: 500 * 1024 * 1024,
            file_max_bytes: 100 * 1024 * 1024,
            signed_url_secs: 300,
            thumbnail_px: 320,
        }
    }
}

impl MediaSettings {
    /// Checks the media settings; the error names the bad key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match self.backend.as_str() {
            "local" => {}
            "s3" => {
                if self
                    .s3_bucket
                    .as_deref()
                    .is_none_or(|b| b.trim().is_empty())
                {
                    return Err((
                        "media.s3_bucket",
                        "is required with backend = \"s3\"".into(),
                    ));
                }
                if let Some(endpoint) = &self.s3_endpoint
                    && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                {
                    return Err((
                        "media.s3_endpoint",
                        "must start with http:// or https://".into(),
                    ));
                }
                if self.s3_region.trim().is_empty() {
                    return Err(("media.s3_region", "may not be empty".into()));
                }
            }
            _ => return Err(("media.backend", "must be `local` or `s3`".into())),
        }
        for (key, value) in [
            ("media.image_max_bytes", self.image_max_bytes),
            ("media.video_max_bytes", self.video_max_bytes),
            ("media.file_max_bytes", self.file_max_bytes),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        // SigV4 presigned URLs live at most 7 days.
        if !(1..=604_800).contains(&self.signed_url_secs) {
            return Err((
                "media.signed_url_secs",
                "must be between 1 and 604800".into(),
            ));
        }
        if !(16..=2048).contains(&self.thumbnail_px) {
            return Err(("media.thumbnail_px", "must be between 16 and 2048".into()));
        }
        Ok(())
    }
}

/// FCM push settings (docs/protocol.md §7). Push is off without a key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// A Firebase service-account JSON key; setting it turns push on. Its `project_id` names
    /// the FCM project and its `token_uri` the OAuth2 token endpoint.
    pub fcm_key_file: Option<PathBuf>,
    /// The FCM base URL: pushes go to `{fcm_endpoint}/v1/projects/{project_id}/messages:send`.
    pub fcm_endpoint: String,
    /// The per-user, per-room coalescing window, in milliseconds: every message of a room
    /// within it becomes one push for each absent member.
    pub coalesce_ms: u64,
    /// FCM requests in flight at once (over one pooled HTTP client).
    pub concurrency: usize,
    /// Pushes that may wait (coalescing, or queued for sending). Beyond it the oldest are
    /// dropped and counted in `chatnode_push_dropped_total`.
    pub max_pending: usize,
    /// How long a push is retried (429 and 5xx, with backoff) before it is given up, in seconds.
    pub retry_secs: u64,
    /// FCM requests started per second at most, evenly paced (0: no limit). The default is
    /// FCM's default quota (600,000 a minute per project); pacing also spreads the CPU cost of
    /// a large room's pushes instead of spending it in one burst.
    pub max_rate: u32,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            fcm_key_file: None,
            fcm_endpoint: "https://fcm.googleapis.com".into(),
            coalesce_ms: 2000,
            concurrency: 64,
            max_pending: 100_000,
            retry_secs: 60,
            max_rate: 10_000,
        }
    }
}

impl PushSettings {
    /// Checks the push settings; the error names the bad key. Whether the key file holds a
    /// usable service-account key is checked when the node starts (`push::start`).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(file) = &self.fcm_key_file
            && !file.is_file()
        {
            return Err((
                "push.fcm_key_file",
                format!("names {} which is not a readable file", file.display()),
            ));
        }
        let endpoint = self.fcm_endpoint.trim_end_matches('/');
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.len() <= "https://".len()
        {
            return Err((
                "push.fcm_endpoint",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if self.coalesce_ms > 600_000 {
            return Err((
                "push.coalesce_ms",
                "may be at most 600000 (10 minutes)".into(),
            ));
        }
        if !(1..=4096).contains(&self.concurrency) {
            return Err(("push.concurrency", "must be between 1 and 4096".into()));
        }
        if self.max_pending < 16 {
            return Err(("push.max_pending", "must be at least 16".into()));
        }
        if !(1..=86_400).contains(&self.retry_secs) {
            return Err(("push.retry_secs", "must be between 1 and 86400".into()));
        }
        if self.max_rate > 1_000_000 {
            return Err((
                "push.max_rate",
                "may be at most 1000000 (0: no limit)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `HS256` (with `secret`) or `RS256` / `ES256` (with `public_key_file`).
    pub algorithm: JwtAlgorithm,
    /// The HS256 secret. Unset: generated on first start into `<data_dir>/auth.secret`.
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256.
    pub public_key_file: Option<PathBuf>,
    /// Clock leeway on `exp`, in seconds (at most 60).
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest WebSocket frame accepted, in bytes (larger: close 1009).
    pub frame: usize,
    /// Largest message text, in bytes of UTF-8.
    pub text: usize,
    /// Requests per second per connection.
    pub rate: u32,
    /// Burst above the rate.
    pub burst: u32,
    /// Rejected requests within 10 seconds that close the connection with 4009.
    pub abuse: u32,
    /// Frames a connection may have queued before it is closed with 4008.
    pub outbound_queue: usize,
    /// Largest REST request body, in bytes.
    pub http_body: usize,
    /// Seconds a client has to send a whole JSON request body (then 408); media uploads get
    /// this plus the time their size takes at [`Self::upload_min_rate`].
    pub http_body_secs: u64,
    /// The slowest an upload may arrive, in bytes per second, on average over its whole body.
    pub upload_min_rate: u64,
    /// Seconds an upload may go without a single byte arriving (then 408).
    pub upload_idle_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSettings {
    /// Seconds between server pings; a connection silent for two is dropped.
    pub heartbeat_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomSettings {
    /// Seconds an empty room's actor lives on after its last activity.
    pub idle_secs: u64,
    /// Seconds a group actor with no rooms and no subscribers lives on.
    pub group_idle_secs: u64,
    /// Latest messages each room actor keeps in memory.
    pub cache_messages: usize,
    /// Milliseconds between batched cursor writes.
    pub cursor_flush_ms: u64,
    /// Recently seen `cmid`s kept in memory per room (older ones are checked in the store).
    pub recent_cmids: usize,
}

/// The chat page served at `/` (src/web/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Serve the chat page at `/`.
    pub enabled: bool,
    /// Offer `POST /v1/dev/login`, which hands a token to anyone who names a user. For a
    /// developer's own machine only: refused unless `listen` is a loopback address and tokens
    /// are HS256.
    pub dev_login: bool,
    /// Lifetime of a dev-login token, in seconds.
    pub dev_login_ttl_secs: u64,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dev_login: false,
            dev_login_ttl_secs: 12 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Seconds to wait for connections to drain after SIGTERM.
    pub grace_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            node_id: 0,
            store: StoreBackend::Embedded,
            metrics_listen: None,
            workers: 0,
            log: "info,fjall=warn,lsm_tree=warn".into(),
            log_format: "text".into(),
            auth: AuthSettings::default(),
            limits: LimitSettings::default(),
            ws: WsSettings::default(),
            rooms: RoomSettings::default(),
            shutdown: ShutdownSettings::default(),
            scylla: ScyllaSettings::default(),
            media: MediaSettings::default(),
            push: PushSettings::default(),
            web: WebSettings::default(),
        }
    }
}

/// Never prints the secret.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret: None,
            public_key_file: None,
            leeway_secs: 60,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            frame: 64 * 1024,
            text: 16 * 1024,
            rate: 30,
            burst: 60,
            abuse: 100,
            outbound_queue: 1024,
            http_body: 256 * 1024,
            http_body_secs: 10,
            upload_min_rate: 16 * 1024,
            upload_idle_secs: 10,
        }
    }
}

impl Default for WsSettings {
    fn default() -> Self {
        Self { heartbeat_secs: 25 }
    }
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            idle_secs: 300,
            group_idle_secs: 600,
            cache_messages: 256,
            cursor_flush_ms: 1000,
            recent_cmids: 4096,
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { grace_secs: 10 }
    }
}

/// Maps `CHATNODE_*` variable names (without the prefix, lower case) onto setting paths.
fn env_key(name: &str) -> String {
    const SECTIONS: [(&str, &str); 10] = [
        ("web_", "web."),
        ("scylla_", "scylla."),
        ("media_", "media."),
        ("push_", "push."),
        ("auth_", "auth."),
        ("limit_", "limits."),
        ("limits_", "limits."),
        ("ws_", "ws."),
        ("rooms_", "rooms."),
        ("shutdown_", "shutdown."),
    ];
    for (prefix, section) in SECTIONS {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("{section}{rest}");
        }
    }
    name.to_owned()
}

impl Settings {
    /// Loads defaults, then `file` (if given), then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    problem: format!("names {} which does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("CHATNODE_")
                // Variables of the test harness, not settings.
                .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("test_"))
                .map(|k| env_key(&k.as_str().to_ascii_lowercase()).into()),
        );
        let settings: Settings = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "listen",
                "must be an address and port such as 127.0.0.1:8080",
            );
        }
        if let Some(metrics) = &self.metrics_listen
            && metrics.parse::<SocketAddr>().is_err()
        {
            return invalid("metrics_listen", "must be an address and port");
        }
        if self.node_id > MAX_NODE_ID {
            return invalid("node_id", "must be between 0 and 1023");
        }
        if self.store == StoreBackend::Scylla
            && let Err((key, problem)) = crate::store::scylla::settings::check(&self.scylla)
        {
            return invalid(key, &problem);
        }
        if let Err((key, problem)) = self.media.check() {
            return invalid(key, &problem);
        }
        if let Err((key, problem)) = self.push.check() {
            return invalid(key, &problem);
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid("log_format", "must be `text` or `json`");
        }
        match self.auth.algorithm {
            JwtAlgorithm::HS256 => {
                if self.auth.secret.as_ref().is_some_and(|s| s.len() < 32) {
                    return invalid("auth.secret", "must be at least 32 bytes");
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                if self.auth.public_key_file.is_none() {
                    return invalid("auth.public_key_file", "is required with RS256 and ES256");
                }
            }
        }
        if self.auth.leeway_secs > 60 {
            return invalid("auth.leeway_secs", "may be at most 60");
        }
        let l = &self.limits;
        if l.frame < 1024 {
            return invalid("limits.frame", "must be at least 1024 bytes");
        }
        if l.text == 0 || l.text >= l.frame {
            return invalid("limits.text", "must be above 0 and below limits.frame");
        }
        if l.rate == 0 {
            return invalid("limits.rate", "must be at least 1");
        }
        if l.burst < l.rate {
            return invalid("limits.burst", "must be at least limits.rate");
        }
        if l.abuse == 0 {
            return invalid("limits.abuse", "must be at least 1");
        }
        if l.outbound_queue < 16 {
            return invalid("limits.outbound_queue", "must be at least 16");
        }
        if l.http_body < 1024 {
            return invalid("limits.http_body", "must be at least 1024 bytes");
        }
        if l.http_body_secs == 0 || l.upload_idle_secs == 0 {
            return invalid(
                "limits.http_body_secs",
                "it and limits.upload_idle_secs must be at least 1",
            );
        }
        if l.upload_min_rate < 1024 {
            return invalid(
                "limits.upload_min_rate",
                "must be at least 1024 bytes per second",
            );
        }
        if self.ws.heartbeat_secs == 0 {
            return invalid("ws.heartbeat_secs", "must be at least 1");
        }
        if self.rooms.cache_messages < crate::protocol::codec::MAX_PAGE {
            return invalid("rooms.cache_messages", "must be at least 200");
        }
        if self.rooms.cursor_flush_ms == 0 {
            return invalid("rooms.cursor_flush_ms", "must be at least 1");
        }
        if self.web.dev_login {
            if !self.listen_addr().ip().is_loopback() {
                return invalid(
                    "web.dev_login",
                    "hands out tokens to anyone: it may only be on when `listen` is a loopback address",
                );
            }
            if self.auth.algorithm != JwtAlgorithm::HS256 {
                return invalid("web.dev_login", "needs HS256 tokens (the node mints them)");
            }
            if self.web.dev_login_ttl_secs == 0 || self.web.dev_login_ttl_secs > 7 * 24 * 3600 {
                return invalid("web.dev_login_ttl_secs", "must be between 1 and 604800");
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().expect("defaults validate");
    }

    #[test]
    fn dev_login_only_on_loopback_with_hs256() {
        let mut s = Settings::default();
        s.web.dev_login = true;
        s.validate().expect("loopback + HS256 is allowed");
        s.listen = "0.0.0.0:8080".into();
        let err = s
            .validate()
            .expect_err("public listener refused")
            .to_string();
        assert!(err.contains("web.dev_login"), "{err}");
        s.listen = "[::1]:8080".into();
        s.validate().expect("IPv6 loopback is allowed");
        s.auth.algorithm = JwtAlgorithm::RS256;
        s.auth.public_key_file = Some("/nonexistent.pem".into());
        let err = s.validate().expect_err("RS256 refused").to_string();
        assert!(err.contains("web.dev_login"), "{err}");
    }

    #[test]
    fn env_names_map_to_sections() {
        assert_eq!(env_key("limit_rate"), "limits.rate");
        assert_eq!(env_key("auth_secret"), "auth.secret");
        assert_eq!(env_key("data_dir"), "data_dir");
        assert_eq!(env_key("ws_heartbeat_secs"), "ws.heartbeat_secs");
        assert_eq!(env_key("media_s3_bucket"), "media.s3_bucket");
        assert_eq!(env_key("push_fcm_key_file"), "push.fcm_key_file");
        assert_eq!(env_key("scylla_nodes"), "scylla.nodes");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let mut s = Settings::default();
        s.limits.burst = 1;
        let err = s.validate().expect_err("burst below rate");
        assert!(err.to_string().contains("limits.burst"), "{err}");
        let s = Settings {
            listen: "nowhere".into(),
            ..Settings::default()
        };
        assert!(
            s.validate()
                .expect_err("bad listen")
                .to_string()
                .contains("listen")
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn environment_overrides_nested_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHATNODE_AUTH_SECRET", "0123456789abcdef0123456789abcdef");
            jail.set_env("CHATNODE_LIMIT_RATE", "99");
            jail.set_env("CHATNODE_LIMIT_BURST", "120");
            jail.set_env("CHATNODE_DATA_DIR", "/tmp/elsewhere");
            jail.set_env("CHATNODE_TEST_SCYLLA", "ignored");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.limits.rate, 99);
            assert_eq!(s.limits.burst, 120);
            assert_eq!(s.data_dir, PathBuf::from("/tmp/elsewhere"));
            assert!(s.auth.secret.is_some());
            jail.set_env("CHATNODE_LIMIT_RAET", "5");
            let err = Settings::load(None).expect_err("typo refused");
            assert!(err.to_string().to_lowercase().contains("raet"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn media_settings_are_checked() {
        let mut s = Settings::default();
        s.media.backend = "s3".into();
        let err = s.validate().expect_err("s3 without a bucket");
        assert!(err.to_string().contains("media.s3_bucket"), "{err}");
        s.media.s3_bucket = Some("chat".into());
        s.validate().expect("s3 with a bucket");
        s.media.s3_endpoint = Some("127.0.0.1:9000".into());
        let err = s.validate().expect_err("endpoint without a scheme");
        assert!(err.to_string().contains("media.s3_endpoint"), "{err}");
        s.media.backend = "ftp".into();
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.media.signed_url_secs = 0;
        assert!(s.validate().is_err());
        assert_eq!(env_key("media_image_max_bytes"), "media.image_max_bytes");
    }

    #[test]
    fn push_settings_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Settings::default();
        s.push.fcm_key_file = Some(dir.path().join("missing.json"));
        let err = s.validate().expect_err("a key file that does not exist");
        assert!(err.to_string().contains("push.fcm_key_file"), "{err}");
        let key = dir.path().join("key.json");
        std::fs::write(&key, "{}").expect("write");
        s.push.fcm_key_file = Some(key);
        s.validate()
            .expect("an existing key file (parsed at start)");
        s.push.fcm_endpoint = "fcm.googleapis.com".into();
        let err = s.validate().expect_err("an endpoint without a scheme");
        assert!(err.to_string().contains("push.fcm_endpoint"), "{err}");
        let mut s = Settings::default();
        s.push.concurrency = 0;
        assert!(s.validate().is_err());
        assert_eq!(env_key("push_coalesce_ms"), "push.coalesce_ms");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[limits]\nrat = 5\n").expect("write");
        let err = Settings::load(Some(&path)).expect_err("unknown key");
        assert!(err.to_string().contains("rat"), "{err}");
    }
}
