//! Authentication (docs/protocol.md §2): JWT verification with `jsonwebtoken`, the caller's
//! [`Principal`], token minting for `chatnode token`, and the generated HS256 secret.
//!
//! Tokens never reach logs: errors here say what was wrong, never the token.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthSettings, JwtAlgorithm};
use crate::ids::{GroupId, UserId, now_ms};

/// The file, inside the data directory, that holds the generated HS256 secret.
pub const SECRET_FILE: &str = "auth.secret";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("auth setup: {0}")]
    Setup(String),
}

/// The claims this node reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    pub name: Option<String>,
    /// `None`: any group. `Some`: only these.
    pub groups: Option<HashSet<GroupId>>,
    pub service: bool,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

impl Principal {
    /// Whether the token lets this caller touch `group`.
    pub fn may_use(&self, group: &GroupId) -> bool {
        self.groups.as_ref().is_none_or(|g| g.contains(group))
    }
}

/// Verifies tokens with the configured key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway_secs: u64,
}

impl Verifier {
    pub fn new(settings: &AuthSettings, secret: Option<&[u8]>) -> Result<Self, AuthError> {
        let (key, algorithm) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = secret.ok_or_else(|| AuthError::Setup("no HS256 secret".into()))?;
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let path = settings
                    .public_key_file
                    .as_ref()
                    .ok_or_else(|| AuthError::Setup("auth.public_key_file is required".into()))?;
                let pem = std::fs::read(path).map_err(|e| {
                    AuthError::Setup(format!("auth.public_key_file {}: {e}", path.display()))
                })?;
                if settings.algorithm == JwtAlgorithm::RS256 {
                    let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                        AuthError::Setup(format!("auth.public_key_file is not an RSA key: {e}"))
                    })?;
                    (key, Algorithm::RS256)
                } else {
                    let key = DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        AuthError::Setup(format!("auth.public_key_file is not an EC key: {e}"))
                    })?;
                    (key, Algorithm::ES256)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Ok(Self {
            key,
            validation,
            leeway_secs: settings.leeway_secs,
        })
    }

    /// The leeway on `exp`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Verifies a token and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                other => AuthError::Invalid(format!("{other:?}")),
            },
        )?;
        let claims = data.claims;
        let user =
            UserId::parse(&claims.sub).map_err(|e| AuthError::Invalid(format!("`sub` {e}")))?;
        let groups = match claims.groups {
            Some(list) => Some(
                list.iter()
                    .map(|g| GroupId::parse(g))
                    .collect::<Result<HashSet<_>, _>>()
                    .map_err(|e| AuthError::Invalid(format!("`groups` entry {e}")))?,
            ),
            None => None,
        };
        Ok(Principal {
            user,
            name: claims.name,
            groups,
            service: claims.role.as_deref() == Some("service"),
            exp: claims.exp,
        })
    }
}

/// Mints an HS256 token.
pub fn mint(
    secret: &[u8],
    user: &str,
    name: Option<&str>,
    ttl_secs: u64,
    service: bool,
    groups: Option<Vec<String>>,
) -> Result<String, AuthError> {
    UserId::parse(user).map_err(|e| AuthError::Invalid(format!("user {e}")))?;
    let claims = Claims {
        sub: user.to_owned(),
        exp: now_ms() / 1000 + ttl_secs as i64,
        name: name.map(str::to_owned),
        groups,
        role: service.then(|| "service".to_owned()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Setup(e.to_string()))
}

/// Returns the HS256 secret: the configured one, or the one kept in the data directory,
/// generated (32 random bytes, hex, mode 0600) on first use.
pub fn resolve_secret(settings: &AuthSettings, data_dir: &Path) -> Result<Vec<u8>, AuthError> {
    if let Some(secret) = &settings.secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path: PathBuf = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) => {
            let trimmed = existing.trim();
            if trimmed.len() < 32 {
                return Err(AuthError::Setup(format!(
                    "{} holds a secret shorter than 32 bytes",
                    path.display()
                )));
            }
            Ok(trimmed.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| AuthError::Setup(format!("{}: {e}", data_dir.display())))?;
            let secret = hex::encode(rand::random::<[u8; 32]>());
            write_private(&path, secret.as_bytes())
                .map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "generated a new HS256 secret");
            Ok(secret.into_bytes())
        }
        Err(e) => Err(AuthError::Setup(format!("{}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            leeway_secs: 0,
            ..AuthSettings::default()
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let verifier = Verifier::new(&settings(), Some(secret)).expect("verifier");
        let token = mint(
            secret,
            "alice",
            Some("Alice"),
            60,
            false,
            Some(vec!["g1".into()]),
        )
        .expect("mint");
        let p = verifier.verify(&token).expect("valid");
        assert_eq!(p.user.as_str(), "alice");
        assert!(!p.service);
        assert!(p.may_use(&GroupId::parse("g1").expect("id")));
        assert!(!p.may_use(&GroupId::parse("g2").expect("id")));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let verifier = Verifier::new(&settings(), Some(secret)).expect("verifier");
        let other = mint(
            b"another-secret-another-secret-xx",
            "bob",
            None,
            60,
            false,
            None,
        )
        .expect("mint");
        assert!(matches!(
            verifier.verify(&other),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify("garbage"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(verifier.verify(""), Err(AuthError::Missing)));
        let claims = Claims {
            sub: "carol".into(),
            exp: now_ms() / 1000 - 10,
            name: None,
            groups: None,
            role: None,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode");
        assert!(matches!(verifier.verify(&expired), Err(AuthError::Expired)));
    }

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = resolve_secret(&AuthSettings::default(), dir.path()).expect("generate");
        let again = resolve_secret(&AuthSettings::default(), dir.path()).expect("reuse");
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
