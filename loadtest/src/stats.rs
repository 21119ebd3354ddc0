//! Shared measurements: counters every connection bumps, latency histograms (sharded so
//! connections on several threads rarely meet on one lock), the measured window, the run's
//! phase, and the burst scenario's per-message delivery times.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, up to an hour, with three significant digits.
const HIGHEST_NS: u64 = 3_600_000_000_000;
const SHARDS: usize = 16;

/// Where the run is. Senders send only during `Warmup` and `Measure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Setup = 0,
    Warmup = 1,
    Measure = 2,
    Drain = 3,
    Stop = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Setup,
            1 => Self::Warmup,
            2 => Self::Measure,
            3 => Self::Drain,
            _ => Self::Stop,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Warmup => "warm-up",
            Self::Measure => "measure",
            Self::Drain => "drain",
            Self::Stop => "stop",
        }
    }

    pub fn sending(self) -> bool {
        matches!(self, Self::Warmup | Self::Measure)
    }
}

#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Connections currently open and present in their rooms.
    pub open: AtomicU64,
    pub reconnects: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Sends answered with an `err` instead of `sent`.
    pub send_failed: AtomicU64,
    /// Sends whose connection ended before their answer came.
    pub unanswered: AtomicU64,
    /// Sends skipped because the window of unacknowledged sends was full.
    pub skipped: AtomicU64,
    /// Binary frames received, of every type.
    pub frames_in: AtomicU64,
    /// `msg` frames received, duplicates included.
    pub deliveries: AtomicU64,
    /// Distinct deliveries, live or recovered.
    pub unique: AtomicU64,
    /// Messages recovered with `enter ... since` after a reconnect.
    pub recovered: AtomicU64,
    pub measured_sent: AtomicU64,
    pub measured_deliveries: AtomicU64,
    pub err_frames: AtomicU64,
    /// Connections the server closed or that broke, unasked.
    pub dropped: AtomicU64,
    /// Frames the harness could not decode.
    pub undecodable: AtomicU64,
    /// The lowest `limits.rate` a `hello` announced (0: none seen).
    pub hello_rate: AtomicU64,
}

/// Per-message delivery facts for the burst scenario.
pub struct BurstSlot {
    pub count: AtomicU64,
    pub first_ns: AtomicU64,
    pub last_ns: AtomicU64,
    pub send_ns: AtomicU64,
}

impl Default for BurstSlot {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            send_ns: AtomicU64::new(0),
        }
    }
}

pub struct Stats {
    pub counters: Counters,
    phase: AtomicU8,
    measure_start_ns: AtomicU64,
    measure_end_ns: AtomicU64,
    delivery: Vec<Mutex<Histogram<u64>>>,
    ack: Vec<Mutex<Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    pub bursts: Vec<BurstSlot>,
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    /// `bursts`: how many burst messages to track (0 outside the burst scenario).
    pub fn new(bursts: usize) -> Self {
        Self {
            counters: Counters::default(),
            phase: AtomicU8::new(Phase::Setup as u8),
            measure_start_ns: AtomicU64::new(u64::MAX),
            measure_end_ns: AtomicU64::new(u64::MAX),
            delivery: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            ack: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            errors: Mutex::new(BTreeMap::new()),
            closes: Mutex::new(BTreeMap::new()),
            bursts: (0..bursts).map(|_| BurstSlot::default()).collect(),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub fn start_measuring(&self, now_ns: u64) {
        self.measure_start_ns.store(now_ns, Ordering::Release);
    }

    pub fn stop_measuring(&self, now_ns: u64) {
        self.measure_end_ns.store(now_ns, Ordering::Release);
    }

    /// Whether a message sent at `send_ns` belongs to the measured window.
    pub fn in_window(&self, send_ns: u64) -> bool {
        send_ns >= self.measure_start_ns.load(Ordering::Relaxed)
            && send_ns < self.measure_end_ns.load(Ordering::Relaxed)
    }

    pub fn record_delivery(&self, shard: usize, latency_ns: u64) {
        lock(&self.delivery[shard % SHARDS]).saturating_record(latency_ns.max(1));
    }

    pub fn record_ack(&self, shard: usize, latency_ns: u64) {
        lock(&self.ack[shard % SHARDS]).saturating_record(latency_ns.max(1));
    }

    pub fn count_error(&self, code: &str) {
        self.counters.err_frames.fetch_add(1, Ordering::Relaxed);
        *lock(&self.errors).entry(code.to_owned()).or_default() += 1;
    }

    /// Records why a connection ended without being asked to (a close code or an error).
    pub fn count_close(&self, reason: String) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        *lock(&self.closes).entry(reason).or_default() += 1;
    }

    pub fn note_hello_rate(&self, rate: u64) {
        let c = &self.counters.hello_rate;
        let mut current = c.load(Ordering::Relaxed);
        while current == 0 || rate < current {
            match c.compare_exchange_weak(current, rate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn delivery_histogram(&self) -> Histogram<u64> {
        merge(&self.delivery)
    }

    pub fn ack_histogram(&self) -> Histogram<u64> {
        merge(&self.ack)
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    pub fn closes(&self) -> BTreeMap<String, u64> {
        lock(&self.closes).clone()
    }
}

fn merge(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut total = histogram();
    for shard in shards {
        // Same bounds everywhere, so adding cannot fail.
        let _ = total.add(&*lock(shard));
    }
    total
}

/// Bumps a counter by one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_measured_messages() {
        let stats = Stats::new(0);
        assert!(
            !stats.in_window(10),
            "nothing is measured before the window opens"
        );
        stats.start_measuring(100);
        assert!(stats.in_window(100) && stats.in_window(1_000_000));
        stats.stop_measuring(200);
        assert!(stats.in_window(199) && !stats.in_window(200) && !stats.in_window(99));
    }

    #[test]
    fn shards_merge_into_one_histogram() {
        let stats = Stats::new(0);
        for i in 0..100u64 {
            stats.record_delivery(i as usize, (i + 1) * 1000);
        }
        stats.record_ack(3, 5);
        let h = stats.delivery_histogram();
        assert_eq!(h.len(), 100);
        assert!(h.max() >= 99_900 && h.max() <= 100_100);
        assert_eq!(stats.ack_histogram().len(), 1);
    }

    #[test]
    fn the_lowest_hello_rate_wins() {
        let stats = Stats::new(0);
        stats.note_hello_rate(1000);
        stats.note_hello_rate(30);
        stats.note_hello_rate(500);
        assert_eq!(stats.counters.hello_rate.load(Ordering::Relaxed), 30);
    }
}
