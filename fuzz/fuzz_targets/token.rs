//! Fuzz target `token`: a request's `Authorization` header and query string into the token it
//! carries (`chatnode::api::token_of`), and that token through JWT verification
//! (`chatnode::auth::Verifier::verify`, HS256 with the secret the seed tokens are signed with).
//!
//! Input: a first line (the `Authorization` header's bytes) and then the query string.
//!
//! Contract checked: nothing panics; an empty token is `Missing`; a token that verifies is
//! unexpired (within the leeway), and changing its signature makes it fail.
#![no_main]

use actix_web::http::header::HeaderValue;
use chatnode::auth::{AuthError, Verifier};
use chatnode::config::AuthSettings;
use chatnode::ids::now_ms;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The secret of the seed tokens (fuzz/gen_corpus.py signs with it).
const SECRET: &[u8] = b"chatnode-fuzz-secret";

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::new(&AuthSettings::default(), Some(SECRET)).expect("an HS256 verifier")
});

/// The token with the first character of its signature replaced by another base64url one.
fn forged(token: &str) -> Option<String> {
    let at = token.rfind('.')? + 1;
    let first = token[at..].chars().next()?;
    let other = if first == 'A' { 'B' } else { 'A' };
    Some(format!(
        "{}{other}{}",
        &token[..at],
        &token[at + first.len_utf8()..]
    ))
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, query) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let header = HeaderValue::from_bytes(header).ok();
    let query = String::from_utf8_lossy(query);
    let token = chatnode::api::token_of(header.as_ref(), Some(&query));
    match VERIFIER.verify(&token) {
        Ok(principal) => {
            assert!(!token.is_empty());
            let now = now_ms() / 1000;
            assert!(
                principal.exp + VERIFIER.leeway_secs() as i64 >= now,
                "expired token accepted"
            );
            let forged = forged(&token).expect("a verified token has a signature");
            assert!(
                VERIFIER.verify(&forged).is_err(),
                "a forged signature verified"
            );
        }
        Err(AuthError::Missing) => assert!(token.is_empty()),
        Err(AuthError::Invalid(_) | AuthError::Expired) => assert!(!token.is_empty()),
        Err(AuthError::Setup(e)) => panic!("setup error while verifying: {e}"),
    }
});
