//! Identifiers: validated newtypes for users, groups and rooms (docs/protocol.md §1), and the
//! snowflake generator that stamps message ids.
//!
//! Ids are `Arc<str>` inside so that cloning one into a frame, a map key or another actor's
//! message costs a reference count, not an allocation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be 1 to 64 bytes")]
    Length,
    #[error("may only contain A-Z, a-z, 0-9, '_', '.' and '-'")]
    Charset,
    #[error("may not contain control characters")]
    Control,
}

fn check_name(s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > 64 {
        return Err(IdError::Length);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        return Err(IdError::Charset);
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps `s`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_id!(
    /// A group (namespace): 1..=64 bytes of `[A-Za-z0-9_.-]`.
    GroupId,
    check_name
);
name_id!(
    /// A room within a group: 1..=64 bytes of `[A-Za-z0-9_.-]`.
    RoomId,
    check_name
);
name_id!(
    /// A user: the JWT `sub` claim, 1..=64 bytes of UTF-8 without control characters.
    UserId,
    |s: &str| {
        if s.is_empty() || s.len() > 64 {
            Err(IdError::Length)
        } else if s.chars().any(char::is_control) {
            Err(IdError::Control)
        } else {
            Ok(())
        }
    }
);

/// A message id: a snowflake, strictly increasing within a room.
pub type MessageId = u64;

/// Milliseconds since the Unix epoch on the server clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The snowflake epoch: 2024-01-01T00:00:00Z in Unix milliseconds.
pub const SNOWFLAKE_EPOCH_MS: i64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
/// The largest node id a deployment may configure.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

/// Stamps message ids: 41 bits of milliseconds since [`SNOWFLAKE_EPOCH_MS`], 10 bits of node id,
/// 12 bits of sequence. Ids are strictly increasing across the whole node (and therefore within
/// every room), also when the clock steps back: the generator then borrows from the future.
#[derive(Debug)]
pub struct Snowflake {
    node: u64,
    last: AtomicU64,
}

impl Snowflake {
    pub fn new(node_id: u16) -> Self {
        Self {
            node: u64::from(node_id.min(MAX_NODE_ID)),
            last: AtomicU64::new(0),
        }
    }

    fn compose(&self, ms: u64, seq: u64) -> u64 {
        (ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq
    }

    /// The next id, strictly greater than every id this generator returned before.
    pub fn next_id(&self) -> MessageId {
        let now = (now_ms() - SNOWFLAKE_EPOCH_MS).max(0) as u64;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let prev_ms = prev >> (NODE_BITS + SEQ_BITS);
            let prev_seq = prev & ((1 << SEQ_BITS) - 1);
            let next = if now > prev_ms {
                self.compose(now, 0)
            } else if prev_seq < (1 << SEQ_BITS) - 1 {
                self.compose(prev_ms, prev_seq + 1)
            } else {
                self.compose(prev_ms + 1, 0)
            };
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// The timestamp (Unix milliseconds) encoded in `id`.
    pub fn timestamp_ms(id: MessageId) -> i64 {
        (id >> (NODE_BITS + SEQ_BITS)) as i64 + SNOWFLAKE_EPOCH_MS
    }

    /// Makes every later id greater than `floor` (used when a room reloads from the store after
    /// a restart with a clock that went backwards).
    pub fn observe(&self, floor: MessageId) {
        self.last.fetch_max(floor, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(GroupId::parse("team-1.a_b").is_ok());
        assert_eq!(GroupId::parse(""), Err(IdError::Length));
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(IdError::Length));
        assert_eq!(RoomId::parse("a/b"), Err(IdError::Charset));
        assert!(UserId::parse("김철수").is_ok());
        assert_eq!(UserId::parse(""), Err(IdError::Length));
    }

    #[test]
    fn snowflakes_strictly_increase_and_carry_time() {
        let generator = Snowflake::new(3);
        let mut prev = 0;
        for _ in 0..100_000 {
            let id = generator.next_id();
            assert!(id > prev);
            prev = id;
        }
        let ts = Snowflake::timestamp_ms(prev);
        assert!((ts - now_ms()).abs() < 60_000);
        assert_eq!((prev >> SEQ_BITS) & u64::from(MAX_NODE_ID), 3);
    }

    #[test]
    fn observe_moves_the_floor() {
        let generator = Snowflake::new(0);
        let far = generator.next_id() + (1 << 30);
        generator.observe(far);
        assert!(generator.next_id() > far);
    }
}
