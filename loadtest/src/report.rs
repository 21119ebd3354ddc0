//! The result of a run: one serialisable [`Report`] that becomes the JSON file, the human
//! summary table, and the checks against the scenario's targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::accounting::Integrity;
use crate::node::ProcSample;
use crate::scenario::{Expectations, Scenario};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean() / 1e6,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Harness {
    pub version: &'static str,
    pub started_unix_ms: u64,
    pub runtime_threads: usize,
    pub source_addrs: Option<u8>,
    /// CPUs the harness may run on.
    pub cpus: Option<String>,
    pub rss_kib: Option<u64>,
    /// The harness's own CPU time over the measured window, and per wall second.
    pub cpu_secs: Option<f64>,
    pub cpu_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub urls: Vec<String>,
    pub group: String,
    pub node_pid: Option<u32>,
    pub spawned: bool,
    pub node_pinned_cpu: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    pub planned: u64,
    pub connected: u64,
    pub failed: u64,
    /// Connections that ended unasked (server close, socket error); see `closes`.
    pub dropped: u64,
    pub reconnects: u64,
    pub closes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Messages {
    pub sent: u64,
    pub acked: u64,
    pub send_failed: u64,
    pub unanswered: u64,
    /// Sends skipped because the window was full (rate mode) or the client was reconnecting.
    pub skipped: u64,
    pub measured_sent: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    #[serde(flatten)]
    pub integrity: Integrity,
    /// `msg` frames received, duplicates included.
    pub frames: u64,
    pub recovered: u64,
    /// Deliveries of messages sent in the measured window.
    pub measured: u64,
    pub per_second: f64,
    pub messages_per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub delivery: Percentiles,
    pub ack: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeUsage {
    pub pid: u32,
    pub cpu_secs: f64,
    pub wall_secs: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_share: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub threads: u64,
    pub deliveries_per_cpu_second: Option<f64>,
}

impl NodeUsage {
    pub fn between(
        pid: u32,
        start: ProcSample,
        end: ProcSample,
        wall_secs: f64,
        deliveries: u64,
    ) -> Self {
        let cpu_secs = (end.cpu_secs - start.cpu_secs).max(0.0);
        Self {
            pid,
            cpu_secs,
            wall_secs,
            cpu_share: if wall_secs > 0.0 {
                cpu_secs / wall_secs
            } else {
                0.0
            },
            rss_start_kib: start.rss_kib,
            rss_end_kib: end.rss_kib,
            threads: end.threads,
            deliveries_per_cpu_second: (cpu_secs > 0.0 && deliveries > 0)
                .then(|| deliveries as f64 / cpu_secs),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    pub baseline_rss_kib: u64,
    pub connected_rss_kib: u64,
    pub end_rss_kib: u64,
    pub connections: u64,
    pub rss_per_connection_kib: f64,
    /// The slope of RSS over connections in the second half of the ramp: the cost of one more
    /// connection, without the node's one-time growth.
    pub marginal_kib_per_connection: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurstRow {
    pub seq: u64,
    pub measured: bool,
    pub receivers: u64,
    pub deliveries: u64,
    pub first_ms: Option<f64>,
    pub last_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bursts {
    pub rows: Vec<BurstRow>,
    pub last_delivery_median_ms: Option<f64>,
    pub last_delivery_max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineSample {
    pub t_secs: f64,
    pub phase: &'static str,
    pub open: u64,
    pub sent: u64,
    pub acked: u64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub value: String,
    /// `None`: not measured in this run.
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub harness: Harness,
    pub scenario: Scenario,
    pub target: Target,
    pub interrupted: bool,
    pub measured_secs: f64,
    pub connections: Connections,
    pub messages: Messages,
    pub deliveries: Deliveries,
    pub latency_ms: Latency,
    pub node: Option<NodeUsage>,
    pub idle: Option<IdleMemory>,
    pub burst: Option<Bursts>,
    pub checks: Vec<Check>,
    /// No loss, duplicate, reordering, failed connection or unasked drop.
    pub clean: bool,
    pub notes: Vec<String>,
    pub timeline: Vec<TimelineSample>,
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The checks of `expect` against what was measured.
pub fn checks(expect: &Expectations, r: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    let fmt = |v: Option<f64>, unit: &str| {
        v.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.3} {unit}"))
    };
    if expect.no_loss {
        let i = &r.deliveries.integrity;
        out.push(Check {
            name: "no loss".into(),
            target: "0 lost, duplicated, out of order, failed or dropped".into(),
            value: format!(
                "{} lost, {} duplicated, {} out of order, {} failed, {} dropped",
                i.lost, i.duplicates, i.out_of_order, r.connections.failed, r.connections.dropped
            ),
            pass: Some(r.clean),
        });
    }
    if let Some(max) = expect.delivery_p99_ms {
        let value = (r.latency_ms.delivery.count > 0).then_some(r.latency_ms.delivery.p99);
        out.push(Check {
            name: "delivery p99".into(),
            target: format!("<= {max} ms"),
            value: fmt(value, "ms"),
            pass: value.map(|v| v <= max),
        });
    }
    if let Some(min) = expect.deliveries_per_cpu_second {
        let value = r.node.as_ref().and_then(|n| n.deliveries_per_cpu_second);
        out.push(Check {
            name: "deliveries per node CPU-second".into(),
            target: format!(">= {min}"),
            value: value.map_or_else(
                || "not measured (give --node-pid or --spawn-node)".to_owned(),
                |v| format!("{v:.0}"),
            ),
            pass: value.map(|v| v >= min),
        });
    }
    if let Some(max) = expect.rss_per_connection_kib {
        let value = r.idle.as_ref().map(|i| i.rss_per_connection_kib);
        out.push(Check {
            name: "node RSS per connection".into(),
            target: format!("<= {max} KiB"),
            value: value.map_or_else(
                || "not measured (give --node-pid or --spawn-node)".to_owned(),
                |v| format!("{v:.2} KiB"),
            ),
            pass: value.map(|v| v <= max),
        });
    }
    if let Some(max) = expect.last_delivery_ms {
        let value = r.burst.as_ref().and_then(|b| b.last_delivery_median_ms);
        out.push(Check {
            name: "last delivery after the send (median)".into(),
            target: format!("<= {max} ms"),
            value: fmt(value, "ms"),
            pass: value.map(|v| v <= max),
        });
    }
    out
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency_row(name: &str, p: &Percentiles) -> String {
    if p.count == 0 {
        return format!("    {name:<9} (none measured)\n");
    }
    format!(
        "    {name:<9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11}\n",
        p.p50,
        p.p90,
        p.p99,
        p.p999,
        p.max,
        thousands(p.count)
    )
}

/// The human summary.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nchatnode-loadtest: {}{}",
        r.scenario.name,
        if r.interrupted { " (INTERRUPTED)" } else { "" }
    );
    let _ = writeln!(s, "  {}", r.scenario.summary());
    let node = match (
        r.target.node_pid,
        r.target.spawned,
        r.target.node_pinned_cpu,
    ) {
        (Some(pid), true, Some(cpu)) => format!(" (node pid {pid}, spawned, pinned to CPU {cpu})"),
        (Some(pid), true, None) => format!(" (node pid {pid}, spawned)"),
        (Some(pid), false, _) => format!(" (node pid {pid})"),
        (None, _, _) => String::new(),
    };
    let _ = writeln!(s, "  target        {}{node}", r.target.urls.join(", "));
    let _ = writeln!(
        s,
        "  harness       CPUs {}, {} runtime thread(s), {} source address(es)",
        r.harness.cpus.as_deref().unwrap_or("?"),
        r.harness.runtime_threads,
        r.harness.source_addrs.unwrap_or(1)
    );
    if let (Some(cpu), Some(share)) = (r.harness.cpu_secs, r.harness.cpu_share) {
        let _ = writeln!(
            s,
            "                its CPU in the window: {cpu:.2} s ({:.0}% of a core)",
            share * 100.0
        );
    }
    let _ = writeln!(
        s,
        "  window        warm-up {:.1} s, measured {:.1} s",
        r.scenario.warmup_secs, r.measured_secs
    );
    let c = &r.connections;
    let _ = writeln!(
        s,
        "  connections   {} connected / {} planned, {} failed, {} dropped, {} reconnects",
        thousands(c.connected),
        thousands(c.planned),
        c.failed,
        c.dropped,
        thousands(c.reconnects)
    );
    for (reason, n) in &c.closes {
        let _ = writeln!(s, "                  {n} x {reason}");
    }
    let m = &r.messages;
    let _ = writeln!(
        s,
        "  messages      sent {}  acked {}  failed {}  unanswered {}  skipped {}",
        thousands(m.sent),
        thousands(m.acked),
        m.send_failed,
        m.unanswered,
        m.skipped
    );
    for (code, n) in &m.errors {
        let _ = writeln!(s, "                  {n} x err {code}");
    }
    let d = &r.deliveries;
    let i = &d.integrity;
    let _ = writeln!(
        s,
        "  deliveries    {} received / {} expected  lost {}  duplicates {}  out of order {}  unacked {}",
        thousands(i.received),
        thousands(i.expected),
        thousands(i.lost),
        i.duplicates,
        i.out_of_order,
        i.unacked_deliveries
    );
    if d.recovered > 0 {
        let _ = writeln!(
            s,
            "                recovered after reconnect: {}",
            thousands(d.recovered)
        );
    }
    let _ = writeln!(
        s,
        "  throughput    {} deliveries/s, {:.1} msg/s (measured window)",
        thousands(d.per_second.round() as u64),
        d.messages_per_second
    );
    let _ = writeln!(
        s,
        "  latency (ms)        p50       p90       p99     p99.9       max       count"
    );
    s.push_str(&latency_row("delivery", &r.latency_ms.delivery));
    s.push_str(&latency_row("ack", &r.latency_ms.ack));
    if let Some(n) = &r.node {
        let _ = writeln!(
            s,
            "  node          CPU {:.2} s over {:.1} s ({:.0}% of a core), RSS {:.1} -> {:.1} MiB, {} threads",
            n.cpu_secs,
            n.wall_secs,
            n.cpu_share * 100.0,
            n.rss_start_kib as f64 / 1024.0,
            n.rss_end_kib as f64 / 1024.0,
            n.threads
        );
        if let Some(per) = n.deliveries_per_cpu_second {
            let _ = writeln!(
                s,
                "                {} deliveries per node CPU-second",
                thousands(per.round() as u64)
            );
        }
    }
    if let Some(idle) = &r.idle {
        let _ = writeln!(
            s,
            "  idle memory   RSS {:.1} MiB before, {:.1} MiB with {} connections, {:.1} MiB at the end: {:.2} KiB per connection",
            idle.baseline_rss_kib as f64 / 1024.0,
            idle.connected_rss_kib as f64 / 1024.0,
            thousands(idle.connections),
            idle.end_rss_kib as f64 / 1024.0,
            idle.rss_per_connection_kib
        );
        if let Some(m) = idle.marginal_kib_per_connection {
            let _ = writeln!(
                s,
                "                marginal (slope over the second half of the ramp): {m:.2} KiB per connection"
            );
        }
    }
    if let Some(b) = &r.burst {
        let _ = writeln!(
            s,
            "  bursts        #   receivers  deliveries  first (ms)  last (ms)"
        );
        for row in &b.rows {
            let _ = writeln!(
                s,
                "                {:<3} {:>9} {:>11} {:>11} {:>10}{}",
                row.seq,
                row.receivers,
                row.deliveries,
                row.first_ms
                    .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                row.last_ms
                    .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                if row.measured { "" } else { "  (warm-up)" }
            );
        }
        if let Some(med) = b.last_delivery_median_ms {
            let _ = writeln!(
                s,
                "                last delivery: median {med:.2} ms, worst {:.2} ms",
                b.last_delivery_max_ms.unwrap_or(med)
            );
        }
    }
    for check in &r.checks {
        let verdict = match check.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "----",
        };
        let _ = writeln!(
            s,
            "  [{verdict}] {} {}: {}",
            check.name, check.target, check.value
        );
    }
    for note in &r.notes {
        let _ = writeln!(s, "  note: {note}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
        for v in 1..=1000u64 {
            h.record(v * 1_000_000).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.5, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(
            Percentiles::of(&Histogram::<u64>::new(3).expect("h")),
            Percentiles::default()
        );
    }

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
