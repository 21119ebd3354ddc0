//! `chatnode-loadtest`: the load-test harness for chatnode. It speaks the client contract
//! (docs/protocol.md §3: MessagePack over WebSocket, tokens minted from the node's secret, rooms
//! created over REST first) and runs the fanout, mixed, idle and burst scenarios against one
//! node or several, then reports throughput, latency, loss and the node's CPU and memory.
//!
//! The command line is read here; [`run`] drives a scenario; [`client`] is one simulated
//! client; [`report`] and [`plot`] present the result.

mod accounting;
mod auth;
mod client;
mod limits;
mod node;
mod payload;
mod plot;
mod report;
mod rest;
mod run;
mod scenario;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use client::Endpoint;
use scenario::{Overrides, Rate, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "chatnode-loadtest",
    version,
    about = "Load-test harness for chatnode: fanout, mixed, idle and burst scenarios",
    after_help = "Examples:\n  \
        chatnode-loadtest --spawn-node target/release/chatnode fanout-100x10\n  \
        taskset -c 1 chatnode-loadtest --url http://127.0.0.1:8080 --secret-file data/auth.secret \\\n      \
        --node-pid $(pgrep -x chatnode) saturation-50x50 --json out.json --plot out.svg\n  \
        chatnode-loadtest --spawn-node target/release/chatnode fanout --rooms 5 --members 20 --rate max --window 8\n\n\
        Exit status: 0 clean run, 1 error, 2 loss/duplicates/failed connections, 3 a target missed (with --fail-on-miss), 130 interrupted."
)]
struct Cli {
    /// A scenario: a TOML file, a built-in name (see --list), or a kind (fanout, mixed, idle,
    /// burst) with its defaults.
    scenario: Option<String>,

    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,

    // Target.
    /// A node's base URL (repeat for several nodes of a cluster; connections and REST calls
    /// rotate over them). Default: http://127.0.0.1:8080, or the spawned node.
    #[arg(long = "url", value_name = "URL", help_heading = "Target")]
    urls: Vec<String>,
    /// The node's HS256 secret, to mint tokens.
    #[arg(
        long,
        env = "CHATNODE_AUTH_SECRET",
        hide_env_values = true,
        help_heading = "Target"
    )]
    secret: Option<String>,
    /// Read the secret from a file (e.g. DATA_DIR/auth.secret of a node that generated its own).
    #[arg(long, value_name = "FILE", help_heading = "Target")]
    secret_file: Option<PathBuf>,
    /// Start this chatnode binary on 127.0.0.1 with a temporary data directory, measure it,
    /// and stop it at the end.
    #[arg(long, value_name = "PATH", help_heading = "Target")]
    spawn_node: Option<PathBuf>,
    /// The CPU to pin the spawned node to (with taskset).
    #[arg(long, default_value_t = 0, help_heading = "Target")]
    node_cpu: usize,
    /// Do not pin the spawned node.
    #[arg(long, help_heading = "Target")]
    no_pin: bool,
    /// Extra KEY=VALUE settings for the spawned node (e.g. CHATNODE_LIMITS_OUTBOUND_QUEUE=4096).
    #[arg(long = "node-env", value_name = "KEY=VALUE", help_heading = "Target")]
    node_env: Vec<String>,
    /// Where the spawned node's log goes (default: its temporary directory).
    #[arg(long, value_name = "FILE", help_heading = "Target")]
    node_log: Option<PathBuf>,
    /// The node's PID, to read its CPU time and memory (/proc/PID) over the measured window.
    #[arg(long, value_name = "PID", help_heading = "Target")]
    node_pid: Option<u32>,
    /// Allow targets that are not loopback addresses (an operator's own cluster).
    #[arg(long, help_heading = "Target")]
    allow_remote: bool,
    /// The group the run's rooms live in (default: a new one per run).
    #[arg(long, help_heading = "Target")]
    group: Option<String>,

    // Connections.
    /// Spread connections over loopback source addresses 127.0.0.1..127.0.0.N (default: as
    /// many as the ephemeral port range calls for).
    #[arg(long, value_name = "N", help_heading = "Connections")]
    source_addrs: Option<u8>,
    /// New connections per second.
    #[arg(long, value_name = "PER_SEC", help_heading = "Connections")]
    ramp: Option<f64>,
    /// Most connection handshakes in flight at once.
    #[arg(long, default_value_t = 128, help_heading = "Connections")]
    connect_concurrency: usize,
    /// Seconds a TCP connect, a handshake, `hello` or `entered` may take (entering a big room
    /// grows slower with every member already present).
    #[arg(
        long,
        default_value_t = 60.0,
        value_name = "SECS",
        help_heading = "Connections"
    )]
    step_timeout: f64,
    /// Runtime threads of the harness (1: a current-thread runtime, best on one pinned core).
    #[arg(long, default_value_t = 1, help_heading = "Connections")]
    threads: usize,

    // Scenario overrides.
    /// Seconds of warm-up before the measured window.
    #[arg(long, value_name = "SECS", help_heading = "Scenario overrides")]
    warmup: Option<f64>,
    /// Seconds of the measured window (idle: how long connections stay).
    #[arg(long, value_name = "SECS", help_heading = "Scenario overrides")]
    duration: Option<f64>,
    /// Bytes of message text.
    #[arg(long, value_name = "BYTES", help_heading = "Scenario overrides")]
    payload: Option<usize>,
    /// fanout: rooms.
    #[arg(long, help_heading = "Scenario overrides")]
    rooms: Option<usize>,
    /// fanout, burst: members per room.
    #[arg(long, help_heading = "Scenario overrides")]
    members: Option<usize>,
    /// fanout: senders per room.
    #[arg(long, help_heading = "Scenario overrides")]
    senders: Option<usize>,
    /// fanout: msg/s per sender, or "max"; mixed: msg/s in all.
    #[arg(long, help_heading = "Scenario overrides")]
    rate: Option<Rate>,
    /// fanout: most unacknowledged sends per sender.
    #[arg(long, help_heading = "Scenario overrides")]
    window: Option<usize>,
    /// mixed: users.
    #[arg(long, help_heading = "Scenario overrides")]
    users: Option<usize>,
    /// mixed: members per group room.
    #[arg(long, help_heading = "Scenario overrides")]
    group_size: Option<usize>,
    /// mixed: share of messages to personal rooms (0..1).
    #[arg(long, help_heading = "Scenario overrides")]
    personal_share: Option<f64>,
    /// mixed: disconnects (each with a reconnect and recovery) per second.
    #[arg(long, help_heading = "Scenario overrides")]
    churn: Option<f64>,
    /// idle: connections.
    #[arg(long, help_heading = "Scenario overrides")]
    connections: Option<usize>,
    /// idle: members per room.
    #[arg(long, help_heading = "Scenario overrides")]
    room_size: Option<usize>,
    /// burst: measured messages.
    #[arg(long, help_heading = "Scenario overrides")]
    bursts: Option<usize>,
    /// burst: seconds between messages.
    #[arg(long, value_name = "SECS", help_heading = "Scenario overrides")]
    interval: Option<f64>,

    // Bounds and output.
    /// Seconds to wait after the window for outstanding acks and deliveries.
    #[arg(
        long,
        default_value_t = 15.0,
        value_name = "SECS",
        help_heading = "Bounds and output"
    )]
    drain_timeout: f64,
    /// Hard limit on the whole run in seconds (default: the plan plus five minutes).
    #[arg(long, value_name = "SECS", help_heading = "Bounds and output")]
    max_run: Option<f64>,
    /// Seed of the mixed scenario's choices.
    #[arg(long, default_value_t = 1, help_heading = "Bounds and output")]
    seed: u64,
    /// Write the full result as JSON.
    #[arg(long, value_name = "FILE", help_heading = "Bounds and output")]
    json: Option<PathBuf>,
    /// Draw latency percentiles and throughput as an SVG.
    #[arg(long, value_name = "FILE", help_heading = "Bounds and output")]
    plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short, help_heading = "Bounds and output")]
    quiet: bool,
    /// Exit with 3 when a target of the scenario is missed.
    #[arg(long, help_heading = "Bounds and output")]
    fail_on_miss: bool,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            warmup_secs: self.warmup,
            duration_secs: self.duration,
            payload: self.payload,
            ramp: self.ramp,
            source_addrs: self.source_addrs,
            rooms: self.rooms,
            members: self.members,
            senders: self.senders,
            rate: self.rate,
            window: self.window,
            users: self.users,
            group_size: self.group_size,
            personal_share: self.personal_share,
            churn: self.churn,
            connections: self.connections,
            room_size: self.room_size,
            bursts: self.bursts,
            interval_secs: self.interval,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for (name, text) in scenario::BUILTIN {
            match Scenario::parse(text, name) {
                Ok(s) => println!("{name:<18} {}", s.description),
                Err(e) => println!("{name:<18} (invalid: {e:#})"),
            }
        }
        return ExitCode::SUCCESS;
    }
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatnode-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chatnode-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a node URL into its `host:port`.
fn authority_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| {
            anyhow::anyhow!("{url:?}: give a plain http:// (or ws://) URL of a node; TLS is for a proxy in front of the cluster")
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("{url:?} names no host");
    }
    Ok(if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// The CPUs of a list such as `0-3,5`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

fn run_group() -> String {
    let secs = payload::now_ns() / 1_000_000_000;
    let mut n = secs * 1000 + u64::from(std::process::id() % 1000);
    let mut s = String::new();
    while n > 0 {
        let d = (n % 36) as u32;
        s.insert(0, char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    format!("lt-{s}")
}

async fn main_async(cli: Cli) -> anyhow::Result<ExitCode> {
    let spec = cli.scenario.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "name a scenario (a TOML file, a built-in name from --list, or fanout/mixed/idle/burst)"
        )
    })?;
    let mut scenario = Scenario::load(&spec)?;
    scenario.apply(&cli.overrides())?;
    let connections = scenario.connections() as u64;
    let mut notes = Vec::new();

    // Limits of this machine.
    if let Some(note) = limits::ensure_nofile(connections)? {
        notes.push(note);
    }

    // The secret.
    let secret = match (&cli.secret, &cli.secret_file) {
        (Some(s), _) => Some(s.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --secret-file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let secret = match (secret, &cli.spawn_node) {
        (Some(s), _) => s,
        (None, Some(_)) => auth::random_secret()?,
        (None, None) => bail!(
            "the harness mints tokens with the node's HS256 secret: give --secret, \
             CHATNODE_AUTH_SECRET or --secret-file DATA_DIR/auth.secret"
        ),
    };
    if secret.len() < 32 {
        bail!("the secret must be at least 32 bytes, as the node requires");
    }

    // The node.
    let mut spawned = None;
    if let Some(binary) = &cli.spawn_node {
        if !cli.urls.is_empty() {
            bail!("--spawn-node and --url exclude each other");
        }
        let node = node::SpawnedNode::start(node::SpawnSpec {
            binary,
            secret: &secret,
            pin: (!cli.no_pin).then_some(cli.node_cpu),
            log: cli.node_log.as_deref(),
            env: &cli.node_env,
        })
        .await?;
        eprintln!(
            "chatnode-loadtest: started node pid {} on {}{} (log: {})",
            node.pid,
            node.addr,
            node.pinned
                .map_or_else(String::new, |c| format!(", pinned to CPU {c}")),
            node.log.display()
        );
        if let Some(cpu) = node.pinned {
            let own = limits::own_cpus().unwrap_or_default();
            if parse_cpu_list(&own).contains(&cpu) {
                eprintln!(
                    "chatnode-loadtest: the harness may run on CPUs {own}, the node's included; \
                     for numbers worth keeping pin the harness to another core: \
                     taskset -c {} chatnode-loadtest ...",
                    if cpu == 0 { 1 } else { 0 }
                );
            }
        }
        spawned = Some(node);
    }
    let urls: Vec<String> = match &spawned {
        Some(node) => vec![format!("http://{}", node.addr)],
        None if cli.urls.is_empty() => vec!["http://127.0.0.1:8080".to_owned()],
        None => cli.urls.clone(),
    };
    let result = run_with(&cli, scenario, urls, secret, spawned.as_ref(), notes).await;
    if let Some(node) = spawned {
        match node.stop(Duration::from_secs(15)).await {
            Ok(msg) => eprintln!("chatnode-loadtest: {msg}"),
            Err(e) => eprintln!("chatnode-loadtest: stopping the node: {e:#}"),
        }
    }
    result
}

async fn run_with(
    cli: &Cli,
    scenario: Scenario,
    urls: Vec<String>,
    secret: String,
    spawned: Option<&node::SpawnedNode>,
    mut notes: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let connections = scenario.connections() as u64;
    let mut endpoints = Vec::new();
    let mut http_bases = Vec::new();
    for url in &urls {
        let authority = authority_of(url)?;
        let addr: SocketAddr = tokio::net::lookup_host(&authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} resolves to no address"))?;
        if !addr.ip().is_loopback() && !cli.allow_remote {
            bail!(
                "{url} is not a loopback address; the harness targets 127.0.0.1 unless \
                 --allow-remote is given for a cluster of your own"
            );
        }
        endpoints.push(Endpoint {
            addr,
            authority: authority.clone(),
        });
        http_bases.push(format!("http://{authority}"));
    }
    let all_loopback_v4 = endpoints
        .iter()
        .all(|e| e.addr.is_ipv4() && e.addr.ip().is_loopback());
    let ports = limits::port_range().map_or(28_232, |(lo, hi)| u64::from(hi - lo + 1));
    let source_addrs = if all_loopback_v4 {
        let n = scenario
            .source_addrs
            .unwrap_or_else(|| limits::auto_source_addrs(connections, ports));
        // Every node has its own ports, so the load per (source, node) pair is what counts.
        limits::check_ports(connections.div_ceil(endpoints.len() as u64), n, ports)?;
        Some(n)
    } else {
        None
    };
    let node_pid = cli.node_pid.or(spawned.map(|n| n.pid));
    if let Some(pid) = node_pid
        && let Some(limit) = node::nofile_limit(pid)
        && limit < connections + 64
    {
        let note = format!(
            "the node's open-file limit is {limit}, below the {connections} connections of this run: \
             raise it (ulimit -n) before starting the node"
        );
        eprintln!("chatnode-loadtest: warning: {note}");
        notes.push(note);
    }
    let ramp_secs = connections as f64 / scenario.ramp;
    let bound = cli.max_run.unwrap_or(
        300.0
            + ramp_secs
            + scenario.warmup_secs
            + scenario.duration_secs
            + cli.drain_timeout
            + match &scenario.shape {
                scenario::Shape::Burst(p) => {
                    (p.warmup_bursts + p.bursts) as f64 * (p.interval_secs + 10.0)
                }
                _ => 0.0,
            },
    );
    let settings = run::Settings {
        scenario,
        endpoints,
        http_bases,
        secret: secret.into_bytes(),
        node_pid,
        spawned: spawned.is_some(),
        pinned: spawned.and_then(|n| n.pinned),
        source_addrs,
        connect_concurrency: cli.connect_concurrency,
        step_timeout: Duration::from_secs_f64(cli.step_timeout.max(1.0)),
        drain_timeout: Duration::from_secs_f64(cli.drain_timeout.max(0.0)),
        token_ttl_secs: bound as u64 + 3600,
        seed: cli.seed,
        group: cli.group.clone().unwrap_or_else(run_group),
        threads: cli.threads.max(1),
        quiet: cli.quiet,
        notes,
    };
    let (interrupt_tx, interrupt_rx) = tokio::sync::watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nchatnode-loadtest: interrupted; stopping the clients and reporting");
            let _ = interrupt_tx.send(true);
        }
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs_f64(bound),
        run::execute(settings, interrupt_rx),
    )
    .await;
    ctrl_c.abort();
    let outcome = match outcome {
        Ok(result) => result?,
        Err(_) => bail!("the run exceeded its bound of {bound:.0} s (--max-run) and was abandoned"),
    };
    let report = &outcome.report;
    println!("{}", report::render(report));
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(report).context("encoding the JSON report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chatnode-loadtest: wrote {}", path.display());
    }
    if let Some(path) = &cli.plot {
        plot::draw(
            path,
            &report.scenario.name,
            &outcome.delivery,
            &outcome.ack,
            &report.timeline,
        )?;
        eprintln!("chatnode-loadtest: wrote {}", path.display());
    }
    let missed = report.checks.iter().any(|c| c.pass == Some(false));
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else if !report.clean {
        ExitCode::from(2)
    } else if missed && cli.fail_on_miss {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_become_authorities() {
        assert_eq!(
            authority_of("http://127.0.0.1:8080").expect("ok"),
            "127.0.0.1:8080"
        );
        assert_eq!(
            authority_of("http://127.0.0.1:8080/").expect("ok"),
            "127.0.0.1:8080"
        );
        assert_eq!(
            authority_of("ws://localhost:9/v1/ws").expect("ok"),
            "localhost:9"
        );
        assert_eq!(
            authority_of("http://localhost").expect("ok"),
            "localhost:80"
        );
        assert_eq!(authority_of("http://[::1]:8080").expect("ok"), "[::1]:8080");
        assert!(authority_of("https://example.com").is_err());
        assert!(authority_of("127.0.0.1:8080").is_err());
        assert!(authority_of("http://").is_err());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1"), vec![0, 1]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert_eq!(parse_cpu_list("0-2,5, 7"), vec![0, 1, 2, 5, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "chatnode-loadtest",
            "fanout",
            "--rooms",
            "3",
            "--rate",
            "max",
            "--duration",
            "2",
        ])
        .expect("parses");
        let mut s = Scenario::load(cli.scenario.as_deref().unwrap_or_default()).expect("kind");
        s.apply(&cli.overrides()).expect("fits");
        assert_eq!(s.connections(), 30);
        assert!(Cli::try_parse_from(["chatnode-loadtest", "fanout", "--rate", "fast"]).is_err());
    }
}
