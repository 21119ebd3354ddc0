//! Limits of the machine that bound a run: open files (`ulimit -n`, raised to the hard limit
//! when that is enough, otherwise a clear refusal) and ephemeral ports per loopback source
//! address (which `--source-addrs` multiplies).

use anyhow::bail;

/// Descriptors the harness needs besides its WebSocket connections.
pub const FD_MARGIN: u64 = 256;

/// What to do about the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NofilePlan {
    Enough,
    /// Raise the soft limit to this (within the hard limit).
    Raise(u64),
    /// Even the hard limit is too low.
    TooLow {
        soft: u64,
        hard: u64,
    },
}

pub fn plan_nofile(needed: u64, soft: u64, hard: u64) -> NofilePlan {
    if soft >= needed {
        NofilePlan::Enough
    } else if hard >= needed {
        NofilePlan::Raise(needed)
    } else {
        NofilePlan::TooLow { soft, hard }
    }
}

/// Makes sure this process may open `connections` sockets; returns a note when it raised the
/// soft limit.
pub fn ensure_nofile(connections: u64) -> anyhow::Result<Option<String>> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = connections + FD_MARGIN;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    match plan_nofile(needed, soft, hard) {
        NofilePlan::Enough => Ok(None),
        NofilePlan::Raise(to) => {
            let mut raised = limit;
            raised.current = Some(to);
            setrlimit(Resource::Nofile, raised)?;
            Ok(Some(format!(
                "raised the open-file limit from {soft} to {to}"
            )))
        }
        NofilePlan::TooLow { soft, hard } => bail!(
            "this run opens {connections} connections and needs about {needed} file descriptors, \
             but `ulimit -n` is {soft} (hard limit {hard}). Raise it (as root: `ulimit -n {needed}` \
             in the shell that starts the harness and the node) or run fewer connections."
        ),
    }
}

/// The ephemeral port range, from `/proc/sys/net/ipv4/ip_local_port_range`.
pub fn port_range() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    parse_port_range(&text)
}

pub fn parse_port_range(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split_whitespace();
    let lo = parts.next()?.parse().ok()?;
    let hi = parts.next()?.parse().ok()?;
    (lo <= hi).then_some((lo, hi))
}

/// How many loopback source addresses a run of `connections` should spread over: enough that
/// no address uses more than half its ephemeral ports (ports in TIME_WAIT from an earlier run
/// still count), at least one, at most 250.
pub fn auto_source_addrs(connections: u64, ports_per_addr: u64) -> u8 {
    let usable = (ports_per_addr / 2).max(1);
    connections.div_ceil(usable).clamp(1, 250) as u8
}

/// Checks that `connections` fit `addrs` source addresses.
pub fn check_ports(connections: u64, addrs: u8, ports_per_addr: u64) -> anyhow::Result<()> {
    let per_addr = connections.div_ceil(u64::from(addrs.max(1)));
    if per_addr > ports_per_addr {
        bail!(
            "{connections} connections over {addrs} source address(es) need {per_addr} ephemeral \
             ports per address, but the port range holds {ports_per_addr}: use --source-addrs {}",
            auto_source_addrs(connections, ports_per_addr)
        );
    }
    Ok(())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status).
pub fn own_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("Cpus_allowed_list:")
            .map(|v| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_is_raised_only_within_the_hard_limit() {
        assert_eq!(plan_nofile(1000, 1024, 4096), NofilePlan::Enough);
        assert_eq!(plan_nofile(3000, 1024, 4096), NofilePlan::Raise(3000));
        assert_eq!(
            plan_nofile(30_000, 1024, 20_000),
            NofilePlan::TooLow {
                soft: 1024,
                hard: 20_000
            }
        );
    }

    #[test]
    fn port_ranges_and_source_addresses() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range(""), None);
        let ports = 60999 - 32768 + 1;
        assert_eq!(auto_source_addrs(1000, ports), 1);
        assert_eq!(auto_source_addrs(20_000, ports), 2);
        assert_eq!(auto_source_addrs(100_000, ports), 8);
        assert!(check_ports(20_000, 1, ports).is_ok());
        let err = check_ports(60_000, 1, ports).expect_err("too many for one address");
        assert!(err.to_string().contains("--source-addrs 5"), "{err}");
        assert!(check_ports(60_000, 3, ports).is_ok());
    }
}
