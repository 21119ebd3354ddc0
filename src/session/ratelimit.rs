//! A token bucket per connection (docs/protocol.md §3.6: `rate` requests per second with a
//! `burst`), and the abuse rule: more than `abuse` rejected requests within [`ABUSE_WINDOW`] closes
//! with 4009.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window in which rejected requests are counted towards abuse.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this request with `rate_limited`.
    Reject,
    /// Close the connection with 4009.
    Abuse,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    abuse: usize,
    rejections: VecDeque<Instant>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32, abuse: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
            abuse: abuse as usize,
            rejections: VecDeque::new(),
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        while self
            .rejections
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > ABUSE_WINDOW)
        {
            self.rejections.pop_front();
        }
        self.rejections.push_back(now);
        if self.rejections.len() > self.abuse {
            Verdict::Abuse
        } else {
            Verdict::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_abuse() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 20, 5);
        for _ in 0..20 {
            assert_eq!(limiter.check(start), Verdict::Allow);
        }
        assert_eq!(limiter.check(start), Verdict::Reject);
        // 100 ms later one more token has accrued.
        assert_eq!(
            limiter.check(start + Duration::from_millis(100)),
            Verdict::Allow
        );
        let later = start + Duration::from_millis(100);
        for _ in 0..4 {
            assert_eq!(limiter.check(later), Verdict::Reject);
        }
        assert_eq!(limiter.check(later), Verdict::Abuse);
        // Old rejections age out of the window.
        let much_later = later + ABUSE_WINDOW + Duration::from_secs(1);
        let mut fresh = RateLimiter::new(1, 1, 1);
        assert_eq!(fresh.check(much_later), Verdict::Allow);
        assert_eq!(fresh.check(much_later), Verdict::Reject);
        assert_eq!(
            fresh.check(much_later + ABUSE_WINDOW * 2 + Duration::from_millis(500)),
            Verdict::Allow
        );
    }
}
