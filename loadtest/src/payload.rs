//! The latency stamp every message text carries: `"<send unix nanos> <seq> <padding>"`, padded
//! with `x` to the scenario's payload size. Receivers read the send time back to measure the
//! end-to-end latency, and `seq` numbers the burst scenario's messages.
//!
//! Also the harness clock: Unix nanoseconds that never go backwards within the process, so
//! sender and receivers in one harness agree to the nanosecond.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The smallest payload that holds a stamp: 19 digits, a space, up to 10 digits, a space.
pub const MIN_SIZE: usize = 32;

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub send_ns: u64,
    pub seq: u64,
}

/// Builds a message text of at least `size` bytes carrying `send_ns` and `seq`.
pub fn encode(send_ns: u64, seq: u64, size: usize) -> String {
    let mut text = format!("{send_ns} {seq} ");
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// Reads the stamp at the start of a message text; `None` for a text the harness did not write.
pub fn decode(text: &str) -> Option<Stamp> {
    let mut parts = text.splitn(3, ' ');
    let send_ns = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some(Stamp { send_ns, seq })
}

struct Anchor {
    instant: Instant,
    unix_ns: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    })
}

/// Now, in Unix nanoseconds, from a monotonic clock anchored once per process.
pub fn now_ns() -> u64 {
    let a = anchor();
    a.unix_ns + a.instant.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_at_the_requested_size() {
        let text = encode(1_763_771_234_567_890_123, 42, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(
            decode(&text),
            Some(Stamp {
                send_ns: 1_763_771_234_567_890_123,
                seq: 42
            })
        );
        // A size below the stamp's own length keeps the whole stamp.
        let short = encode(u64::MAX, u64::MAX, 8);
        assert_eq!(decode(&short).map(|s| s.send_ns), Some(u64::MAX));
        assert!(encode(u64::MAX, u32::MAX.into(), MIN_SIZE).len() <= MIN_SIZE);
    }

    #[test]
    fn foreign_texts_have_no_stamp() {
        assert_eq!(decode("hello world"), None);
        assert_eq!(decode(""), None);
        assert_eq!(decode("123"), None);
        assert_eq!(decode("123 abc xxx"), None);
        assert_eq!(decode("-5 1 x"), None);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        // After 2020 and before 2100.
        assert!(a > 1_577_836_800_000_000_000 && a < 4_102_444_800_000_000_000);
    }
}
