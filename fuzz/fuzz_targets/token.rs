//! Fuzz target `token`: a request's `Authorization` header and query string into the token it
//! carries (`chatnode::api::token_of`, what every REST route, the SSE stream and the WebSocket
//! handshake use), and that token through JWT verification (`chatnode::auth::Verifier`, HS256
//! with the secret the seed tokens are signed with).
//!
//! Input: a first line (the `Authorization` header's bytes) and then the query string.
//!
//! Contract checked: nothing panics; an empty token is `Missing` and only it; a token that
//! verifies is unexpired (within the leeway), names a valid user, and fails once its signature
//! is changed.
#![no_main]

use std::sync::LazyLock;

use actix_web::http::header::HeaderValue;
use chatnode::auth::{AuthError, Verifier};
use chatnode::config::AuthSettings;
use chatnode::ids::{UserId, now_ms};
use chatnode_fuzz::{TOKEN_SECRET, lines};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::new(&AuthSettings::default(), Some(TOKEN_SECRET)).expect("an HS256 verifier")
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
    let ([header], query) = lines::<1>(data);
    let header = HeaderValue::from_bytes(header).ok();
    let query = String::from_utf8_lossy(query);
    let token = chatnode::api::token_of(header.as_ref(), Some(&query));
    match VERIFIER.verify(&token) {
        Ok(principal) => {
            let now = now_ms() / 1000;
            assert!(
                principal.exp + VERIFIER.leeway_secs() as i64 >= now,
                "expired token accepted"
            );
            assert!(UserId::parse(principal.user.as_str()).is_ok());
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
