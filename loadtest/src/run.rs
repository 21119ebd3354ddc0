//! The orchestrator: plans users, rooms and clients for a scenario, creates the rooms over
//! REST, ramps the connections up, walks the phases (warm-up, measured window, drain, stop)
//! with the node's CPU and memory read at the window's edges, and turns what the clients saw
//! into a [`Report`]. Every wait here has a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::accounting::Integrity;
use crate::auth::Minter;
use crate::client::{
    self, AutoSend, ClientOutcome, ClientSpec, Command, Endpoint, RoomLedger, Shared,
};
use crate::node::{self, ProcSample};
use crate::payload::now_ns;
use crate::report::{self, Report};
use crate::rest::{self, Rest, RoomPlan};
use crate::scenario::{Kind, Rate, Scenario, Shape};
use crate::stats::{Phase, Stats};

/// The setup identity (creates rooms; as creator it is a member of every room).
const SERVICE_USER: &str = "lt-svc";
/// The mixed scenario's publisher to personal rooms.
const PUBLISHER_USER: &str = "lt-pub";
/// How long stopped clients get to close before they are abandoned.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Everything a run needs, resolved from the command line.
pub struct Settings {
    pub scenario: Scenario,
    pub endpoints: Vec<Endpoint>,
    pub http_bases: Vec<String>,
    pub secret: Vec<u8>,
    pub node_pid: Option<u32>,
    pub spawned: bool,
    pub pinned: Option<usize>,
    pub source_addrs: Option<u8>,
    pub connect_concurrency: usize,
    pub step_timeout: Duration,
    pub drain_timeout: Duration,
    pub token_ttl_secs: u64,
    pub seed: u64,
    pub group: String,
    pub threads: usize,
    pub quiet: bool,
    pub notes: Vec<String>,
}

/// A finished run: its report and the histograms behind it (for the plot).
pub struct Outcome {
    pub report: Report,
    pub delivery: Histogram<u64>,
    pub ack: Histogram<u64>,
}

/// A small deterministic generator (SplitMix64) for picking users; no dependency needed.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Users, rooms and clients of a scenario, before any token is minted.
#[derive(Debug, Default)]
pub struct Plan {
    pub rooms: Vec<RoomPlan>,
    pub clients: Vec<PlannedClient>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedClient {
    pub user: String,
    pub service: bool,
    pub rooms: Vec<usize>,
    pub enter: bool,
    pub auto_send: Option<AutoSend>,
    pub reconnect: bool,
    pub commands: bool,
}

fn user(n: usize) -> String {
    format!("u{n}")
}

/// Plans a scenario: who is in which room and who sends.
pub fn plan(scenario: &Scenario) -> Plan {
    let client = |user: String, rooms: Vec<usize>| PlannedClient {
        user,
        service: false,
        rooms,
        enter: true,
        auto_send: None,
        reconnect: false,
        commands: false,
    };
    match &scenario.shape {
        Shape::Fanout(p) => {
            let rooms = (0..p.rooms)
                .map(|i| RoomPlan {
                    room: format!("r{i}"),
                    members: (0..p.members).map(|j| user(i * p.members + j)).collect(),
                })
                .collect();
            let senders = (p.rooms * p.senders) as f64;
            let period = match p.rate {
                Rate::PerSecond(r) => 1.0 / r,
                Rate::Max => 0.0,
            };
            let mut clients = Vec::with_capacity(p.rooms * p.members);
            for i in 0..p.rooms {
                for j in 0..p.members {
                    let mut c = client(user(i * p.members + j), vec![i]);
                    if j < p.senders {
                        // Spread the senders' first ticks evenly over one period.
                        let k = (j * p.rooms + i) as f64;
                        c.auto_send = Some(AutoSend {
                            slot: 0,
                            rate: p.rate,
                            window: p.window,
                            offset: Duration::from_secs_f64(period * k / senders),
                        });
                    }
                    clients.push(c);
                }
            }
            Plan { rooms, clients }
        }
        Shape::Mixed(p) => {
            let groups = p.users.div_ceil(p.group_size);
            let mut rooms: Vec<RoomPlan> = (0..p.users)
                .map(|k| RoomPlan {
                    room: format!("p{k}"),
                    members: vec![user(k)],
                })
                .collect();
            rooms.extend((0..groups).map(|m| {
                RoomPlan {
                    room: format!("g{m}"),
                    members: (m * p.group_size..((m + 1) * p.group_size).min(p.users))
                        .map(user)
                        .collect(),
                }
            }));
            let mut clients: Vec<PlannedClient> = (0..p.users)
                .map(|k| PlannedClient {
                    reconnect: true,
                    commands: true,
                    ..client(user(k), vec![k, p.users + k / p.group_size])
                })
                .collect();
            if p.personal_share > 0.0 {
                clients.push(PlannedClient {
                    user: PUBLISHER_USER.to_owned(),
                    service: true,
                    rooms: (0..p.users).collect(),
                    enter: false,
                    auto_send: None,
                    reconnect: true,
                    commands: true,
                });
            }
            Plan { rooms, clients }
        }
        Shape::Idle(p) => {
            let rooms = (0..p.connections.div_ceil(p.room_size))
                .map(|i| RoomPlan {
                    room: format!("r{i}"),
                    members: (i * p.room_size..((i + 1) * p.room_size).min(p.connections))
                        .map(user)
                        .collect(),
                })
                .collect();
            let clients = (0..p.connections)
                .map(|k| client(user(k), vec![k / p.room_size]))
                .collect();
            Plan { rooms, clients }
        }
        Shape::Burst(p) => {
            let rooms = vec![RoomPlan {
                room: "big".to_owned(),
                members: (0..p.members).map(user).collect(),
            }];
            let clients = (0..p.members)
                .map(|k| PlannedClient {
                    commands: k == 0,
                    ..client(user(k), vec![0])
                })
                .collect();
            Plan { rooms, clients }
        }
    }
}

/// What the progress line shows besides the counters.
struct Stage {
    name: String,
    started: Instant,
    planned_secs: Option<f64>,
}

struct Progress {
    stats: Arc<Stats>,
    stage: Mutex<Stage>,
    setup_done: AtomicU64,
    setup_total: AtomicU64,
    planned: u64,
}

impl Progress {
    async fn stage(&self, name: &str, planned_secs: Option<f64>) {
        *self.stage.lock().await = Stage {
            name: name.to_owned(),
            started: Instant::now(),
            planned_secs,
        };
    }

    async fn line(&self, rate: f64) -> String {
        let c = &self.stats.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let stage = self.stage.lock().await;
        let elapsed = stage.started.elapsed().as_secs_f64();
        let clock = match stage.planned_secs {
            Some(p) => format!("{elapsed:.1}/{p:.0}s"),
            None => format!("{elapsed:.1}s"),
        };
        if stage.name == "rooms" {
            return format!(
                "setup rooms {clock}: {}/{} requests",
                g(&self.setup_done),
                g(&self.setup_total)
            );
        }
        format!(
            "{} {clock} | conns {}/{} open {} fail {} drop {} | sent {} acked {} | msgs in {} ({:.0}/s) | err {}",
            stage.name,
            g(&c.connected),
            self.planned,
            g(&c.open),
            g(&c.connect_failed),
            g(&c.dropped),
            g(&c.sent),
            g(&c.acked),
            g(&c.deliveries),
            rate,
            g(&c.err_frames)
        )
    }
}

/// Waits `d`, or less when the run is interrupted; returns true when interrupted.
async fn pause(d: Duration, interrupt: &mut watch::Receiver<bool>) -> bool {
    if *interrupt.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = interrupt.wait_for(|v| *v) => true,
    }
}

fn sample(pid: Option<u32>, notes: &mut Vec<String>) -> Option<ProcSample> {
    let pid = pid?;
    match node::sample(pid) {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!("could not read the node's /proc entry: {e:#}"));
            None
        }
    }
}

/// The node and the harness itself, read at one edge of the measured window.
fn edge(pid: Option<u32>, notes: &mut Vec<String>) -> (Option<ProcSample>, Option<ProcSample>) {
    (sample(pid, notes), node::sample(std::process::id()).ok())
}

struct Phases {
    tx: watch::Sender<Phase>,
    stats: Arc<Stats>,
}

impl Phases {
    fn set(&self, phase: Phase) {
        self.stats.set_phase(phase);
        let _ = self.tx.send(phase);
    }
}

/// Runs the scenario to the end (or to an interrupt) and reports.
pub async fn execute(
    mut s: Settings,
    mut interrupt: watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let scenario = s.scenario.clone();
    let plan = plan(&scenario);
    let bursts = match &scenario.shape {
        Shape::Burst(p) => p.warmup_bursts + p.bursts,
        _ => 0,
    };
    let stats = Arc::new(Stats::new(bursts));
    let minter = Minter::new(&s.secret, s.token_ttl_secs);
    let rest = Rest::new(s.http_bases.clone(), minter.service(SERVICE_USER)?)?;
    rest.check(&s.group).await?;

    let progress = Arc::new(Progress {
        stats: stats.clone(),
        stage: Mutex::new(Stage {
            name: "rooms".into(),
            started: Instant::now(),
            planned_secs: None,
        }),
        setup_done: AtomicU64::new(0),
        setup_total: AtomicU64::new(rest::request_count(&plan.rooms) as u64),
        planned: plan.clients.len() as u64,
    });
    let bar = if s.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    };
    let plain = !s.quiet && bar.is_hidden();
    let run_start = Instant::now();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let ticker = {
        let progress = progress.clone();
        let bar = bar.clone();
        let timeline = timeline.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_frames = 0u64;
            let mut last_at = Instant::now();
            let mut rate = 0.0;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                if n.is_multiple_of(4) {
                    let c = &stats.counters;
                    let frames = c.deliveries.load(Ordering::Relaxed);
                    let dt = last_at.elapsed().as_secs_f64();
                    rate = (frames - last_frames) as f64 / dt.max(1e-3);
                    last_frames = frames;
                    last_at = Instant::now();
                    timeline.lock().await.push(report::TimelineSample {
                        t_secs: run_start.elapsed().as_secs_f64(),
                        phase: stats.phase().as_str(),
                        open: c.open.load(Ordering::Relaxed),
                        sent: c.sent.load(Ordering::Relaxed),
                        acked: c.acked.load(Ordering::Relaxed),
                        frames,
                    });
                }
                let line = progress.line(rate).await;
                if plain {
                    if n.is_multiple_of(20) {
                        eprintln!("{line}");
                    }
                } else {
                    bar.set_message(line);
                    bar.tick();
                }
            }
        })
    };

    let result = drive(
        &mut s,
        &plan,
        &stats,
        &rest,
        &minter,
        &progress,
        &mut interrupt,
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let driven = result?;

    // The report.
    let mut integrity = Integrity::default();
    for outcome in &driven.outcomes {
        for (room, tally) in &outcome.tallies {
            integrity.add(driven.acked[*room], tally);
        }
    }
    let c = &stats.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let delivery = stats.delivery_histogram();
    let ack = stats.ack_histogram();
    let measured = g(&c.measured_deliveries);
    let measured_secs = driven.measured_secs.max(1e-9);
    let mut notes = std::mem::take(&mut s.notes);
    notes.extend(driven.notes);
    let own_cpu = match (driven.own_start, driven.own_end) {
        (Some(a), Some(b)) if driven.measured_secs > 0.0 => {
            Some((b.cpu_secs - a.cpu_secs).max(0.0))
        }
        _ => None,
    };
    if let Some(share) = own_cpu.map(|c| c / measured_secs)
        && share > 0.9 * s.threads as f64
    {
        notes.push(format!(
            "the harness used {:.0}% of a core during the window: it may have limited the run",
            share * 100.0
        ));
    }
    let connections = report::Connections {
        planned: plan.clients.len() as u64,
        connected: driven.outcomes.iter().filter(|o| o.connected).count() as u64,
        failed: g(&c.connect_failed),
        dropped: g(&c.dropped),
        reconnects: g(&c.reconnects),
        closes: stats.closes(),
    };
    let clean = integrity.is_clean()
        && connections.failed == 0
        && connections.dropped == 0
        && connections.connected == connections.planned
        && !driven.interrupted;
    let mut r = Report {
        harness: report::Harness {
            version: env!("CARGO_PKG_VERSION"),
            started_unix_ms: driven.started_unix_ns / 1_000_000,
            runtime_threads: s.threads,
            source_addrs: s.source_addrs,
            cpus: crate::limits::own_cpus(),
            rss_kib: node::sample(std::process::id()).ok().map(|p| p.rss_kib),
            cpu_secs: own_cpu,
            cpu_share: own_cpu.map(|c| c / measured_secs),
        },
        scenario: scenario.clone(),
        target: report::Target {
            urls: s.http_bases.clone(),
            group: s.group.clone(),
            node_pid: s.node_pid,
            spawned: s.spawned,
            node_pinned_cpu: s.pinned,
        },
        interrupted: driven.interrupted,
        measured_secs: driven.measured_secs,
        connections,
        messages: report::Messages {
            sent: g(&c.sent),
            acked: g(&c.acked),
            send_failed: g(&c.send_failed),
            unanswered: g(&c.unanswered),
            skipped: g(&c.skipped),
            measured_sent: g(&c.measured_sent),
            errors: stats.errors(),
        },
        deliveries: report::Deliveries {
            integrity,
            frames: g(&c.deliveries),
            recovered: g(&c.recovered),
            measured,
            per_second: measured as f64 / measured_secs,
            messages_per_second: g(&c.measured_sent) as f64 / measured_secs,
        },
        latency_ms: report::Latency {
            delivery: report::Percentiles::of(&delivery),
            ack: report::Percentiles::of(&ack),
        },
        node: match (s.node_pid, driven.node_start, driven.node_end) {
            (Some(pid), Some(a), Some(b)) => Some(report::NodeUsage::between(
                pid,
                a,
                b,
                driven.measured_secs,
                measured,
            )),
            _ => None,
        },
        idle: driven.idle,
        burst: driven.burst,
        checks: Vec::new(),
        clean,
        notes,
        timeline: std::mem::take(&mut *timeline.lock().await),
    };
    r.checks = report::checks(&scenario.expect, &r);
    Ok(Outcome {
        report: r,
        delivery,
        ack,
    })
}

/// What [`drive`] hands back.
struct Driven {
    /// Messages each room acknowledged.
    acked: Vec<u64>,
    outcomes: Vec<ClientOutcome>,
    measured_secs: f64,
    started_unix_ns: u64,
    node_start: Option<ProcSample>,
    node_end: Option<ProcSample>,
    own_start: Option<ProcSample>,
    own_end: Option<ProcSample>,
    idle: Option<report::IdleMemory>,
    burst: Option<report::Bursts>,
    interrupted: bool,
    notes: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    s: &mut Settings,
    plan: &Plan,
    stats: &Arc<Stats>,
    rest: &Rest,
    minter: &Minter,
    progress: &Arc<Progress>,
    interrupt: &mut watch::Receiver<bool>,
) -> anyhow::Result<Driven> {
    let scenario = &s.scenario;
    let started_unix_ns = now_ns();
    let mut notes = Vec::new();

    // Rooms over REST.
    progress.stage("rooms", None).await;
    let done = &progress.setup_done;
    rest.create_rooms(&s.group, &plan.rooms, &|| {
        done.fetch_add(1, Ordering::Relaxed);
    })
    .await?;
    let baseline = sample(s.node_pid, &mut notes);

    // Clients.
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let phases = Phases {
        tx: phase_tx,
        stats: stats.clone(),
    };
    let reconnect_delay = match &scenario.shape {
        Shape::Mixed(p) => Duration::from_millis(p.reconnect_delay_ms),
        _ => Duration::from_millis(200),
    };
    let shared = Arc::new(Shared {
        stats: stats.clone(),
        group: s.group.clone(),
        endpoints: s.endpoints.clone(),
        source_addrs: s.source_addrs,
        payload: scenario.payload,
        rooms: plan
            .rooms
            .iter()
            .map(|r| RoomLedger::new(r.room.clone()))
            .collect(),
        connect_slots: Semaphore::new(s.connect_concurrency.max(1)),
        phase: phase_rx,
        reconnect_delay,
        ws_config: WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0),
        step_timeout: s.step_timeout,
    });
    let mut senders: Vec<Option<mpsc::Sender<Command>>> = Vec::with_capacity(plan.clients.len());
    let mut specs = Vec::with_capacity(plan.clients.len());
    for (index, planned) in plan.clients.iter().enumerate() {
        let token = if planned.service {
            minter.service(&planned.user)?
        } else {
            minter.user(&planned.user)?
        };
        let (tx, rx) = if planned.commands {
            let (tx, rx) = mpsc::channel(if planned.service { 4096 } else { 64 });
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        senders.push(tx);
        specs.push(ClientSpec {
            index,
            token,
            rooms: planned.rooms.clone(),
            enter: planned.enter,
            auto_send: planned.auto_send,
            reconnect: planned.reconnect,
            commands: rx,
        });
    }
    let planned = specs.len() as u64;
    let ramp_secs = planned as f64 / scenario.ramp;
    progress.stage("connect", Some(ramp_secs)).await;
    let ramp_start = Instant::now();
    let mut handles: Vec<JoinHandle<ClientOutcome>> = Vec::with_capacity(specs.len());
    let mut interrupted = false;
    // For idle runs, the node's RSS as connections arrive: (connections in, RSS KiB).
    let mut rss_curve: Vec<(u64, u64)> = Vec::new();
    let curve_step = (specs.len() / 20).max(1);
    let track_rss = scenario.kind() == Kind::Idle && s.node_pid.is_some();
    for (k, spec) in specs.into_iter().enumerate() {
        if track_rss
            && k.is_multiple_of(curve_step)
            && let Some(sample) = sample(s.node_pid, &mut notes)
        {
            let open = stats.counters.open.load(Ordering::Relaxed);
            rss_curve.push((open, sample.rss_kib));
        }
        let due = ramp_start + Duration::from_secs_f64(k as f64 / scenario.ramp);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if k.is_multiple_of(64) && *interrupt.borrow() {
            interrupted = true;
            break;
        }
        handles.push(tokio::spawn(client::run(shared.clone(), spec)));
    }
    let c = &stats.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    let spawned = handles.len() as u64;
    while g(&c.connected) + g(&c.connect_failed) < spawned {
        if Instant::now() >= connect_deadline {
            notes.push(format!(
                "only {} of {spawned} connections were in their rooms 60 s after the ramp",
                g(&c.connected)
            ));
            break;
        }
        if pause(Duration::from_millis(20), interrupt).await {
            interrupted = true;
            break;
        }
    }
    if g(&c.connected) == 0 {
        phases.set(Phase::Stop);
        let _ = join_all(handles).await;
        let reasons = stats.closes();
        bail!("no connection got into its rooms; the first reasons: {reasons:?}");
    }
    // Joining sends `presence` to everyone already present: let that traffic die down, so the
    // measured part does not queue behind the setup's.
    if !interrupted {
        progress.stage("quiet", None).await;
        match quiet(stats, Duration::from_millis(500), Duration::from_secs(60), interrupt).await {
            Settled::Quiet => {}
            Settled::Busy => notes.push(
                "the node was still sending setup traffic (presence) 60 s after the last connection".to_owned(),
            ),
            Settled::Interrupted => interrupted = true,
        }
    }
    let hello_rate = g(&c.hello_rate);
    if let Some(note) = rate_warning(scenario, hello_rate) {
        eprintln!("chatnode-loadtest: warning: {note}");
        notes.push(note);
    }

    let mut measured_secs = 0.0;
    let mut node_start = None;
    let mut node_end = None;
    let mut own_start = None;
    let mut own_end = None;
    let mut idle = None;
    let mut burst = None;
    if !interrupted {
        match &scenario.shape {
            Shape::Fanout(_) | Shape::Mixed(_) => {
                let schedulers = match &scenario.shape {
                    Shape::Mixed(p) => start_mixed_schedulers(p, &senders, s.seed, stats, &shared),
                    _ => Vec::new(),
                };
                phases.set(Phase::Warmup);
                progress.stage("warm-up", Some(scenario.warmup_secs)).await;
                interrupted = pause(Duration::from_secs_f64(scenario.warmup_secs), interrupt).await;
                (node_start, own_start) = edge(s.node_pid, &mut notes);
                stats.start_measuring(now_ns());
                phases.set(Phase::Measure);
                progress
                    .stage("measure", Some(scenario.duration_secs))
                    .await;
                let t0 = Instant::now();
                if !interrupted {
                    interrupted =
                        pause(Duration::from_secs_f64(scenario.duration_secs), interrupt).await;
                }
                stats.stop_measuring(now_ns());
                measured_secs = t0.elapsed().as_secs_f64();
                (node_end, own_end) = edge(s.node_pid, &mut notes);
                phases.set(Phase::Drain);
                for h in schedulers {
                    h.abort();
                }
                progress
                    .stage("drain", Some(s.drain_timeout.as_secs_f64()))
                    .await;
                if let Some(note) = drain(
                    &shared,
                    scenario.kind() == Kind::Mixed,
                    s.drain_timeout,
                    interrupt,
                )
                .await
                {
                    notes.push(note);
                }
            }
            Shape::Idle(p) => {
                progress.stage("settle", Some(p.settle_secs)).await;
                interrupted = pause(Duration::from_secs_f64(p.settle_secs), interrupt).await;
                (node_start, own_start) = edge(s.node_pid, &mut notes);
                let present = g(&c.open).max(1);
                stats.start_measuring(now_ns());
                phases.set(Phase::Measure);
                progress.stage("hold", Some(scenario.duration_secs)).await;
                let t0 = Instant::now();
                if !interrupted {
                    interrupted =
                        pause(Duration::from_secs_f64(scenario.duration_secs), interrupt).await;
                }
                measured_secs = t0.elapsed().as_secs_f64();
                stats.stop_measuring(now_ns());
                (node_end, own_end) = edge(s.node_pid, &mut notes);
                if let (Some(base), Some(at), Some(end)) = (baseline, node_start, node_end) {
                    rss_curve.push((present, at.rss_kib));
                    let upper: Vec<(f64, f64)> = rss_curve
                        .iter()
                        .filter(|(n, _)| *n >= present / 2)
                        .map(|&(n, rss)| (n as f64, rss as f64))
                        .collect();
                    idle = Some(report::IdleMemory {
                        marginal_kib_per_connection: slope(&upper),
                        baseline_rss_kib: base.rss_kib,
                        connected_rss_kib: at.rss_kib,
                        end_rss_kib: end.rss_kib,
                        connections: present,
                        rss_per_connection_kib: at.rss_kib.saturating_sub(base.rss_kib) as f64
                            / present as f64,
                    });
                }
            }
            Shape::Burst(p) => {
                phases.set(Phase::Measure);
                progress.stage("bursts", None).await;
                let receivers = shared.rooms[0].receivers.load(Ordering::Relaxed);
                let sender = senders.first().cloned().flatten();
                let total = p.warmup_bursts + p.bursts;
                let mut t0 = Instant::now();
                for i in 0..total {
                    if i == p.warmup_bursts {
                        (node_start, own_start) = edge(s.node_pid, &mut notes);
                        stats.start_measuring(now_ns());
                        t0 = Instant::now();
                    }
                    let next = Instant::now() + Duration::from_secs_f64(p.interval_secs);
                    if let Some(tx) = &sender {
                        let _ = tx
                            .send(Command::Send {
                                slot: 0,
                                seq: Some(i as u64),
                            })
                            .await;
                    }
                    // Wait for every receiver, at most the interval (or 10 s when longer).
                    let wait_until = next.max(Instant::now() + Duration::from_secs(10));
                    while stats.bursts[i].count.load(Ordering::Relaxed) < receivers
                        && Instant::now() < wait_until
                    {
                        if pause(Duration::from_millis(2), interrupt).await {
                            interrupted = true;
                            break;
                        }
                    }
                    if interrupted {
                        break;
                    }
                    if i + 1 < total
                        && pause(next.saturating_duration_since(Instant::now()), interrupt).await
                    {
                        interrupted = true;
                        break;
                    }
                }
                stats.stop_measuring(now_ns());
                measured_secs = t0.elapsed().as_secs_f64();
                (node_end, own_end) = edge(s.node_pid, &mut notes);
                phases.set(Phase::Drain);
                if let Some(note) = drain(&shared, false, s.drain_timeout, interrupt).await {
                    notes.push(note);
                }
                burst = Some(burst_rows(stats, p.warmup_bursts, receivers));
            }
        }
    }
    phases.set(Phase::Stop);
    drop(senders);
    let outcomes = join_all(handles).await;
    let acked = shared
        .rooms
        .iter()
        .map(|r| r.acked.load(Ordering::Relaxed))
        .collect();
    Ok(Driven {
        acked,
        outcomes,
        measured_secs,
        started_unix_ns,
        node_start,
        node_end,
        own_start,
        own_end,
        idle,
        burst,
        interrupted,
        notes,
    })
}

/// The least-squares slope of `points` (x, y); `None` without two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// How the wait for a quiet node ended.
enum Settled {
    Quiet,
    Busy,
    Interrupted,
}

/// Waits until no frame has arrived for `still`, at most `limit`.
async fn quiet(
    stats: &Stats,
    still: Duration,
    limit: Duration,
    interrupt: &mut watch::Receiver<bool>,
) -> Settled {
    let deadline = Instant::now() + limit;
    let mut last = stats.counters.frames_in.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        if pause(Duration::from_millis(50), interrupt).await {
            return Settled::Interrupted;
        }
        let now = stats.counters.frames_in.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return Settled::Quiet;
        }
        if Instant::now() >= deadline {
            return Settled::Busy;
        }
    }
}

/// A warning when the node's per-connection rate limit is below what the scenario sends.
pub fn rate_warning(scenario: &Scenario, hello_rate: u64) -> Option<String> {
    if hello_rate == 0 {
        return None;
    }
    let needed = match &scenario.shape {
        Shape::Fanout(p) => match p.rate {
            Rate::PerSecond(r) => r,
            // As fast as acks allow: thousands per second.
            Rate::Max => 10_000.0,
        },
        Shape::Mixed(p) => (p.rate * p.personal_share).max(1.0),
        Shape::Idle(_) | Shape::Burst(_) => 0.0,
    };
    (needed > hello_rate as f64).then(|| {
        format!(
            "the node allows {hello_rate} requests/s per connection (hello.limits.rate) but this \
             scenario sends up to {needed:.0}/s on one connection: raise CHATNODE_LIMIT_RATE and \
             CHATNODE_LIMIT_BURST on the node or expect `rate_limited` errors"
        )
    })
}

fn start_mixed_schedulers(
    p: &crate::scenario::MixedParams,
    senders: &[Option<mpsc::Sender<Command>>],
    seed: u64,
    stats: &Arc<Stats>,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let users = p.users;
    let publisher = senders.get(users).cloned().flatten();
    let user_senders: Vec<mpsc::Sender<Command>> =
        senders[..users].iter().flatten().cloned().collect();
    let mut handles = Vec::new();
    // Messages: a share to personal rooms through the publisher, the rest from a random user
    // to their group room.
    {
        let stats = stats.clone();
        let user_senders = user_senders.clone();
        let mut phase = shared.phase.clone();
        let (rate, share) = (p.rate, p.personal_share);
        handles.push(tokio::spawn(async move {
            let mut rng = SplitMix::new(seed);
            let _ = phase.wait_for(|p| p.sending()).await;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                if !stats.phase().sending() {
                    return;
                }
                let k = rng.below(users);
                let (tx, slot) = match &publisher {
                    Some(publisher) if rng.unit() < share => (publisher, k),
                    _ => (&user_senders[k], 1),
                };
                if tx.try_send(Command::Send { slot, seq: None }).is_err() {
                    stats.counters.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    if p.churn > 0.0 {
        let stats = stats.clone();
        let mut phase = shared.phase.clone();
        let churn = p.churn;
        handles.push(tokio::spawn(async move {
            let mut rng = SplitMix::new(seed ^ 0xC0FFEE);
            let _ = phase.wait_for(|p| p.sending()).await;
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / churn));
            tick.tick().await;
            loop {
                tick.tick().await;
                if !stats.phase().sending() {
                    return;
                }
                let k = rng.below(users);
                let _ = user_senders[k].try_send(Command::Churn);
            }
        }));
    }
    handles
}

/// Waits until every send is answered and every expected delivery arrived (and, with
/// `reconnects`, every client is back), at most `timeout`. Returns a note when it gave up.
async fn drain(
    shared: &Shared,
    reconnects: bool,
    timeout: Duration,
    interrupt: &mut watch::Receiver<bool>,
) -> Option<String> {
    let c = &shared.stats.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    loop {
        let answered = g(&c.acked) + g(&c.send_failed) + g(&c.unanswered);
        let expected: u64 = shared
            .rooms
            .iter()
            .map(|r| g(&r.acked) * g(&r.receivers))
            .sum();
        let back = !reconnects || g(&c.open) >= g(&c.connected);
        let done = g(&c.sent) <= answered && g(&c.unique) >= expected && back;
        if done {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(format!(
                "drain gave up after {:.0} s: {} sends unanswered, {} of {} expected deliveries in, {} of {} clients open",
                timeout.as_secs_f64(),
                g(&c.sent).saturating_sub(answered),
                g(&c.unique),
                expected,
                g(&c.open),
                g(&c.connected)
            ));
        }
        if pause(Duration::from_millis(20), interrupt).await {
            return Some("interrupted during the drain".to_owned());
        }
    }
}

fn burst_rows(stats: &Stats, warmup: usize, receivers: u64) -> report::Bursts {
    let rows: Vec<report::BurstRow> = stats
        .bursts
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let send = b.send_ns.load(Ordering::Relaxed);
            let count = b.count.load(Ordering::Relaxed);
            let since =
                |t: u64| (send > 0 && count > 0).then(|| t.saturating_sub(send) as f64 / 1e6);
            report::BurstRow {
                seq: i as u64,
                measured: i >= warmup,
                receivers,
                deliveries: count,
                first_ms: since(b.first_ns.load(Ordering::Relaxed)),
                last_ms: since(b.last_ns.load(Ordering::Relaxed)),
            }
        })
        .collect();
    let lasts: Vec<f64> = rows
        .iter()
        .filter(|r| r.measured)
        .filter_map(|r| r.last_ms)
        .collect();
    report::Bursts {
        last_delivery_median_ms: report::median(&lasts),
        last_delivery_max_ms: lasts.iter().copied().reduce(f64::max),
        rows,
    }
}

async fn join_all(handles: Vec<JoinHandle<ClientOutcome>>) -> Vec<ClientOutcome> {
    let deadline = Instant::now() + STOP_WAIT;
    let mut outcomes = Vec::with_capacity(handles.len());
    for mut h in handles {
        match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(_)) => {}
            Err(_) => h.abort(),
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_plans_rooms_members_and_spread_senders() {
        let mut s = Scenario::load("fanout").expect("defaults");
        s.apply(&crate::scenario::Overrides {
            rooms: Some(3),
            members: Some(4),
            senders: Some(2),
            rate: Some(Rate::PerSecond(10.0)),
            ..Default::default()
        })
        .expect("valid");
        let p = plan(&s);
        assert_eq!(p.rooms.len(), 3);
        assert!(p.rooms.iter().all(|r| r.members.len() == 4));
        assert_eq!(p.rooms[1].members[0], "u4");
        assert_eq!(p.clients.len(), 12);
        let senders: Vec<_> = p.clients.iter().filter_map(|c| c.auto_send).collect();
        assert_eq!(senders.len(), 6);
        // Offsets spread over one period (100 ms), all distinct.
        let mut offsets: Vec<Duration> = senders.iter().map(|a| a.offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), 6);
        assert!(offsets.iter().all(|o| *o < Duration::from_millis(100)));
    }

    #[test]
    fn mixed_users_have_a_personal_and_a_group_room() {
        let mut s = Scenario::load("mixed").expect("built in");
        s.apply(&crate::scenario::Overrides {
            users: Some(25),
            ..Default::default()
        })
        .expect("valid");
        let p = plan(&s);
        // 25 personal rooms and 3 group rooms (10, 10, 5).
        assert_eq!(p.rooms.len(), 28);
        assert_eq!(p.rooms[27].members.len(), 5);
        assert_eq!(p.clients.len(), 26, "25 users and the publisher");
        let u13 = &p.clients[13];
        assert_eq!(u13.rooms, vec![13, 25 + 1]);
        assert!(p.rooms[26].members.contains(&u13.user));
        assert!(u13.reconnect && u13.commands && u13.enter);
        let publisher = &p.clients[25];
        assert!(publisher.service && !publisher.enter);
        assert_eq!(publisher.rooms.len(), 25);
    }

    #[test]
    fn idle_and_burst_plans() {
        let mut s = Scenario::load("idle").expect("defaults");
        s.apply(&crate::scenario::Overrides {
            connections: Some(250),
            room_size: Some(100),
            ..Default::default()
        })
        .expect("valid");
        let p = plan(&s);
        assert_eq!(p.rooms.len(), 3);
        assert_eq!(p.rooms[2].members.len(), 50);
        assert_eq!(p.clients[249].rooms, vec![2]);

        let p = plan(&Scenario::load("burst-5000").expect("built in"));
        assert_eq!(p.rooms.len(), 1);
        assert_eq!(p.rooms[0].members.len(), 5000);
        assert_eq!(p.clients.iter().filter(|c| c.commands).count(), 1);
    }

    #[test]
    fn slopes_fit_a_line() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i) * 100.0, 5000.0 + 6.5 * f64::from(i) * 100.0))
            .collect();
        let s = slope(&line).expect("a slope");
        assert!((s - 6.5).abs() < 1e-9, "{s}");
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let mut a = SplitMix::new(7);
        let mut b = SplitMix::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn rate_limits_below_the_plan_are_reported() {
        let s = Scenario::load("fanout-100x10").expect("built in");
        assert!(rate_warning(&s, 30).is_none(), "20 msg/s fits 30/s");
        assert!(rate_warning(&s, 10).is_some());
        let sat = Scenario::load("saturation-50x50").expect("built in");
        assert!(rate_warning(&sat, 30).is_some());
        assert!(rate_warning(&sat, 100_000).is_none());
        assert!(rate_warning(&sat, 0).is_none(), "no hello seen");
    }
}
