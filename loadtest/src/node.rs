//! The node under test, seen from outside: its CPU time and memory read from `/proc/PID`, and,
//! with `--spawn-node`, a node the harness starts itself on 127.0.0.1 (temporary data directory,
//! pinned to one CPU with `taskset`) and stops by its PID at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub threads: u64,
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The command name, in
/// parentheses, may hold spaces, so the fields are counted after its closing parenthesis.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line; after the name, field 3 (state) is index 0.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field (e.g. `VmRSS`) or a count (e.g. `Threads`) from `/proc/PID/status`.
pub fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The soft `Max open files` of `/proc/PID/limits`.
pub fn parse_limits_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Reads a process's CPU time and memory now.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the node still running?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| anyhow!("/proc/{pid}/stat: no CPU times"))?;
    let per_sec = rustix::param::clock_ticks_per_second().max(1);
    Ok(ProcSample {
        cpu_secs: ticks as f64 / per_sec as f64,
        rss_kib: parse_status_field(&status, "VmRSS").unwrap_or(0),
        threads: parse_status_field(&status, "Threads").unwrap_or(0),
    })
}

/// The node's open-file limit, when it can be read.
pub fn nofile_limit(pid: u32) -> Option<u64> {
    parse_limits_nofile(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// A node the harness started.
pub struct SpawnedNode {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub pinned: Option<usize>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// What `--spawn-node` needs.
pub struct SpawnSpec<'a> {
    pub binary: &'a Path,
    pub secret: &'a str,
    pub pin: Option<usize>,
    pub log: Option<&'a Path>,
    /// Extra `KEY=VALUE` settings, after the harness's own.
    pub env: &'a [String],
}

fn has_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl SpawnedNode {
    /// Starts `chatnode serve` on 127.0.0.1 with a port of its choosing and waits for the
    /// line that names its address.
    pub async fn start(spec: SpawnSpec<'_>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatnode-loadtest-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let log = spec
            .log
            .map_or_else(|| dir.path().join("node.log"), Path::to_path_buf);
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the node log {}", log.display()))?;
        let pinned = match spec.pin {
            Some(cpu) if has_taskset() => Some(cpu),
            Some(_) => {
                eprintln!("chatnode-loadtest: `taskset` is not installed; the node is not pinned");
                None
            }
            None => None,
        };
        let mut command = match pinned {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(spec.binary);
                c
            }
            None => Command::new(spec.binary),
        };
        command
            .arg("serve")
            .env("CHATNODE_LISTEN", "127.0.0.1:0")
            .env("CHATNODE_DATA_DIR", dir.path().join("data"))
            .env("CHATNODE_AUTH_SECRET", spec.secret)
            .env("CHATNODE_LIMIT_RATE", "100000")
            .env("CHATNODE_LIMIT_BURST", "100000")
            .env("CHATNODE_SHUTDOWN_GRACE_SECS", "5")
            .env("CHATNODE_LOG", "warn")
            .env_remove("RUST_LOG");
        for kv in spec.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--node-env takes KEY=VALUE, not {kv:?}"))?;
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the node exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the node's stdout is not piped"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("chatnode listening on http://") {
                    return rest
                        .trim()
                        .parse::<SocketAddr>()
                        .with_context(|| format!("the node announced {rest:?}"));
                }
            }
            bail!("the node closed its output before announcing its address")
        })
        .await;
        let addr = match addr {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let tail = tail_of(&log, 20);
                return Err(e.context(format!(
                    "the node did not start; its log ends with:\n{tail}"
                )));
            }
            Err(_) => bail!(
                "the node did not announce its address within 30 s (log: {})",
                log.display()
            ),
        };
        // Keep reading stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            pinned,
            log,
            _dir: dir,
        })
    }

    /// Stops the node by its PID: SIGTERM (it drains), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<String> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Ok(format!("node {} stopped ({status})", self.pid)),
            Ok(Err(e)) => Err(anyhow!("waiting for node {}: {e}", self.pid)),
            Err(_) => {
                self.child.kill().await.context("killing the node")?;
                Ok(format!(
                    "node {} did not stop within {} s of SIGTERM and was killed",
                    self.pid,
                    grace.as_secs()
                ))
            }
        }
    }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_cpu_ticks_even_with_spaces_in_the_name() {
        let stat = "4242 (chat node) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 120 0 0 20 0 9 0 \
                    12345 1000000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(470));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_and_limits_fields_are_read() {
        let status = "Name:\tchatnode\nVmPeak:\t  300000 kB\nVmRSS:\t   45120 kB\nThreads:\t9\n";
        assert_eq!(parse_status_field(status, "VmRSS"), Some(45_120));
        assert_eq!(parse_status_field(status, "Threads"), Some(9));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_limits_nofile(limits), Some(20_000));
        assert_eq!(
            parse_limits_nofile(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(u64::MAX)
        );
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("our own /proc entry");
        assert!(s.rss_kib > 0 && s.threads >= 1);
        assert!(sample(u32::MAX).is_err());
    }
}
