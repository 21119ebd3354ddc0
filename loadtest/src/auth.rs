//! Tokens the way a deployment's backend mints them (docs/protocol.md §2): HS256 JWTs with `sub`,
//! `exp`, and `role: "service"` for the harness's own setup and publisher identity.

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

/// Mints tokens with one secret.
pub struct Minter {
    key: EncodingKey,
    header: Header,
    exp: u64,
}

impl Minter {
    /// Tokens valid for `ttl_secs` from now.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
            exp: crate::payload::now_ns() / 1_000_000_000 + ttl_secs,
        }
    }

    pub fn user(&self, user: &str) -> anyhow::Result<String> {
        self.mint(user, None)
    }

    pub fn service(&self, user: &str) -> anyhow::Result<String> {
        self.mint(user, Some("service"))
    }

    fn mint(&self, sub: &str, role: Option<&'static str>) -> anyhow::Result<String> {
        jsonwebtoken::encode(
            &self.header,
            &Claims {
                sub,
                exp: self.exp,
                role,
            },
            &self.key,
        )
        .context("minting a token")
    }
}

/// A fresh random HS256 secret (64 hex characters) for a node the harness starts.
pub fn random_secret() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_claims_the_node_reads() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let minter = Minter::new(secret, 600);
        let token = minter.service("svc").expect("mint");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret),
            &validation,
        )
        .expect("verifies with the same secret");
        assert_eq!(data.claims["sub"], "svc");
        assert_eq!(data.claims["role"], "service");
        let user = minter.user("u1").expect("mint");
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &user,
            &jsonwebtoken::DecodingKey::from_secret(secret),
            &validation,
        )
        .expect("verifies");
        assert!(data.claims.get("role").is_none());
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &user,
                &jsonwebtoken::DecodingKey::from_secret(b"another secret, another secret!!"),
                &validation,
            )
            .is_err()
        );
    }

    #[test]
    fn random_secrets_are_long_enough_and_differ() {
        let a = random_secret().expect("urandom");
        let b = random_secret().expect("urandom");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
