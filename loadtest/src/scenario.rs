//! Scenarios: what a run does, read from a TOML file (`loadtest/scenarios/*.toml`, also built
//! into the binary) or from a kind's defaults, then adjusted by command-line overrides and
//! validated once, so the rest of the harness works on a [`Scenario`] it can trust.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The scenario files shipped in `loadtest/scenarios/`, built in so the binary runs anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "fanout-100x10",
        include_str!("../scenarios/fanout-100x10.toml"),
    ),
    (
        "fanout-10x500",
        include_str!("../scenarios/fanout-10x500.toml"),
    ),
    (
        "saturation-50x50",
        include_str!("../scenarios/saturation-50x50.toml"),
    ),
    ("idle-20k", include_str!("../scenarios/idle-20k.toml")),
    ("burst-5000", include_str!("../scenarios/burst-5000.toml")),
    ("mixed", include_str!("../scenarios/mixed.toml")),
];

/// The largest text the node accepts by default (docs/protocol.md §3.6).
pub const DEFAULT_TEXT_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Fanout,
    Mixed,
    Idle,
    Burst,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fanout => "fanout",
            Self::Mixed => "mixed",
            Self::Idle => "idle",
            Self::Burst => "burst",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "fanout" => Some(Self::Fanout),
            "mixed" => Some(Self::Mixed),
            "idle" => Some(Self::Idle),
            "burst" => Some(Self::Burst),
            _ => None,
        }
    }
}

/// How fast a sender sends: a fixed rate, or as fast as its acks allow (within its window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    Max,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerSecond(r) => write!(f, "{r} msg/s"),
            Self::Max => f.write_str("as fast as acks allow"),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        s.parse::<f64>()
            .map(Self::PerSecond)
            .map_err(|_| format!("a rate is a number of messages per second or \"max\", not {s:?}"))
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::PerSecond(r) => serializer.serialize_f64(*r),
            Self::Max => serializer.serialize_str("max"),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(Self::PerSecond(n as f64)),
            Raw::Float(r) => Ok(Self::PerSecond(r)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `fanout`: R rooms x M members, S senders per room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutParams {
    pub rooms: usize,
    pub members: usize,
    /// Senders per room (the first S members of each room).
    pub senders: usize,
    /// Per sender.
    pub rate: Rate,
    /// Most unacknowledged sends per sender: the window of `rate = "max"`, a cap otherwise.
    pub window: usize,
}

impl Default for FanoutParams {
    fn default() -> Self {
        Self {
            rooms: 10,
            members: 10,
            senders: 1,
            rate: Rate::PerSecond(10.0),
            window: 64,
        }
    }
}

/// `mixed`: every user in a personal room and one group room; steady sends and churn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixedParams {
    pub users: usize,
    /// Members per group room (the last room may be smaller).
    pub group_size: usize,
    /// Messages per second over the whole run.
    pub rate: f64,
    /// The share of messages that go to personal rooms (sent by a service publisher).
    pub personal_share: f64,
    /// Disconnects (each followed by a reconnect with recovery) per second.
    pub churn: f64,
    /// Pause between a disconnect and the reconnect.
    pub reconnect_delay_ms: u64,
}

impl Default for MixedParams {
    fn default() -> Self {
        Self {
            users: 200,
            group_size: 10,
            rate: 100.0,
            personal_share: 0.5,
            churn: 5.0,
            reconnect_delay_ms: 100,
        }
    }
}

/// `idle`: N connections that enter a room and stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleParams {
    pub connections: usize,
    /// Members per room.
    pub room_size: usize,
    /// Wait after the last connection entered before the node's memory is read.
    pub settle_secs: f64,
}

impl Default for IdleParams {
    fn default() -> Self {
        Self {
            connections: 1000,
            room_size: 100,
            settle_secs: 3.0,
        }
    }
}

/// `burst`: one big room, one message at a time, time to the last delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurstParams {
    /// Present members (connections) of the room; the first one sends.
    pub members: usize,
    /// Measured messages.
    pub bursts: usize,
    /// Unmeasured messages sent first.
    pub warmup_bursts: usize,
    /// Pause between messages.
    pub interval_secs: f64,
}

impl Default for BurstParams {
    fn default() -> Self {
        Self {
            members: 500,
            bursts: 5,
            warmup_bursts: 1,
            interval_secs: 1.0,
        }
    }
}

/// Targets a run is checked against (the project's load targets); all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expectations {
    /// No delivery lost, duplicated or out of order, no connection lost.
    pub no_loss: bool,
    pub delivery_p99_ms: Option<f64>,
    pub deliveries_per_cpu_second: Option<f64>,
    pub rss_per_connection_kib: Option<f64>,
    pub last_delivery_ms: Option<f64>,
}

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    description: Option<String>,
    kind: Kind,
    warmup_secs: Option<f64>,
    duration_secs: Option<f64>,
    payload: Option<usize>,
    ramp: Option<f64>,
    source_addrs: Option<u8>,
    fanout: Option<FanoutParams>,
    mixed: Option<MixedParams>,
    idle: Option<IdleParams>,
    burst: Option<BurstParams>,
    expect: Option<Expectations>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Shape {
    Fanout(FanoutParams),
    Mixed(MixedParams),
    Idle(IdleParams),
    Burst(BurstParams),
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Bytes of message text, the latency stamp included.
    pub payload: usize,
    /// New connections per second.
    pub ramp: f64,
    /// Loopback source addresses (127.0.0.1..127.0.0.N); `None`: chosen from the count.
    pub source_addrs: Option<u8>,
    pub shape: Shape,
    pub expect: Expectations,
}

/// Command-line values that replace the scenario's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub warmup_secs: Option<f64>,
    pub duration_secs: Option<f64>,
    pub payload: Option<usize>,
    pub ramp: Option<f64>,
    pub source_addrs: Option<u8>,
    pub rooms: Option<usize>,
    pub members: Option<usize>,
    pub senders: Option<usize>,
    pub rate: Option<Rate>,
    pub window: Option<usize>,
    pub users: Option<usize>,
    pub group_size: Option<usize>,
    pub personal_share: Option<f64>,
    pub churn: Option<f64>,
    pub connections: Option<usize>,
    pub room_size: Option<usize>,
    pub bursts: Option<usize>,
    pub interval_secs: Option<f64>,
}

impl Scenario {
    /// Finds a scenario by file path, built-in name, or kind name (its defaults).
    pub fn load(spec: &str) -> anyhow::Result<Self> {
        let path = Path::new(spec);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let fallback = path
                .file_stem()
                .map_or_else(|| spec.to_owned(), |s| s.to_string_lossy().into_owned());
            return Self::parse(&text, &fallback).with_context(|| format!("in {}", path.display()));
        }
        if let Some((name, text)) = BUILTIN.iter().find(|(name, _)| *name == spec) {
            return Self::parse(text, name).with_context(|| format!("built-in scenario {name}"));
        }
        if let Some(kind) = Kind::parse(spec) {
            return Self::defaults(kind);
        }
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        bail!(
            "no scenario {spec:?}: give a TOML file, one of the built-in scenarios ({}), or a kind (fanout, mixed, idle, burst)",
            names.join(", ")
        )
    }

    /// A kind with all its defaults.
    pub fn defaults(kind: Kind) -> anyhow::Result<Self> {
        Self::parse(&format!("kind = \"{}\"", kind.as_str()), kind.as_str())
    }

    /// Parses and validates a scenario file; `fallback_name` names it when it does not.
    pub fn parse(text: &str, fallback_name: &str) -> anyhow::Result<Self> {
        let file: ScenarioFile = toml::from_str(text).context("the scenario is not valid")?;
        let sections = [
            (Kind::Fanout, file.fanout.is_some()),
            (Kind::Mixed, file.mixed.is_some()),
            (Kind::Idle, file.idle.is_some()),
            (Kind::Burst, file.burst.is_some()),
        ];
        for (kind, present) in sections {
            if present && kind != file.kind {
                bail!(
                    "a `{}` scenario has a [{}] section: only [{}] applies",
                    file.kind.as_str(),
                    kind.as_str(),
                    file.kind.as_str()
                );
            }
        }
        let shape = match file.kind {
            Kind::Fanout => Shape::Fanout(file.fanout.unwrap_or_default()),
            Kind::Mixed => Shape::Mixed(file.mixed.unwrap_or_default()),
            Kind::Idle => Shape::Idle(file.idle.unwrap_or_default()),
            Kind::Burst => Shape::Burst(file.burst.unwrap_or_default()),
        };
        let scenario = Self {
            name: file.name.unwrap_or_else(|| fallback_name.to_owned()),
            description: file.description.unwrap_or_default(),
            warmup_secs: file.warmup_secs.unwrap_or(match file.kind {
                Kind::Idle | Kind::Burst => 0.0,
                Kind::Fanout | Kind::Mixed => 3.0,
            }),
            duration_secs: file.duration_secs.unwrap_or(10.0),
            payload: file.payload.unwrap_or(100),
            ramp: file.ramp.unwrap_or(1000.0),
            source_addrs: file.source_addrs,
            shape,
            expect: file.expect.unwrap_or_default(),
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Applies command-line overrides; one that does not fit the scenario's kind is an error.
    pub fn apply(&mut self, o: &Overrides) -> anyhow::Result<()> {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *slot = v.clone();
            }
        }
        set(&mut self.warmup_secs, &o.warmup_secs);
        set(&mut self.duration_secs, &o.duration_secs);
        set(&mut self.payload, &o.payload);
        set(&mut self.ramp, &o.ramp);
        if o.source_addrs.is_some() {
            self.source_addrs = o.source_addrs;
        }
        let kind = self.kind();
        let mut misfits = Vec::new();
        let mut check = |given: bool, flag: &'static str, fits: &[Kind]| {
            if given && !fits.contains(&kind) {
                misfits.push(flag);
            }
        };
        check(o.rooms.is_some(), "--rooms", &[Kind::Fanout]);
        check(
            o.members.is_some(),
            "--members",
            &[Kind::Fanout, Kind::Burst],
        );
        check(o.senders.is_some(), "--senders", &[Kind::Fanout]);
        check(o.rate.is_some(), "--rate", &[Kind::Fanout, Kind::Mixed]);
        check(o.window.is_some(), "--window", &[Kind::Fanout]);
        check(o.users.is_some(), "--users", &[Kind::Mixed]);
        check(o.group_size.is_some(), "--group-size", &[Kind::Mixed]);
        check(
            o.personal_share.is_some(),
            "--personal-share",
            &[Kind::Mixed],
        );
        check(o.churn.is_some(), "--churn", &[Kind::Mixed]);
        check(o.connections.is_some(), "--connections", &[Kind::Idle]);
        check(o.room_size.is_some(), "--room-size", &[Kind::Idle]);
        check(o.bursts.is_some(), "--bursts", &[Kind::Burst]);
        check(o.interval_secs.is_some(), "--interval", &[Kind::Burst]);
        if !misfits.is_empty() {
            bail!(
                "{} {} not a setting of `{}` scenarios",
                misfits.join(", "),
                if misfits.len() == 1 { "is" } else { "are" },
                kind.as_str()
            );
        }
        match &mut self.shape {
            Shape::Fanout(p) => {
                set(&mut p.rooms, &o.rooms);
                set(&mut p.members, &o.members);
                set(&mut p.senders, &o.senders);
                set(&mut p.rate, &o.rate);
                set(&mut p.window, &o.window);
            }
            Shape::Mixed(p) => {
                set(&mut p.users, &o.users);
                set(&mut p.group_size, &o.group_size);
                set(&mut p.personal_share, &o.personal_share);
                set(&mut p.churn, &o.churn);
                match o.rate {
                    Some(Rate::PerSecond(r)) => p.rate = r,
                    Some(Rate::Max) => {
                        bail!("a `mixed` scenario sends at a steady rate: give a number")
                    }
                    None => {}
                }
            }
            Shape::Idle(p) => {
                set(&mut p.connections, &o.connections);
                set(&mut p.room_size, &o.room_size);
            }
            Shape::Burst(p) => {
                set(&mut p.members, &o.members);
                set(&mut p.bursts, &o.bursts);
                set(&mut p.interval_secs, &o.interval_secs);
            }
        }
        self.validate()
    }

    pub fn kind(&self) -> Kind {
        match self.shape {
            Shape::Fanout(_) => Kind::Fanout,
            Shape::Mixed(_) => Kind::Mixed,
            Shape::Idle(_) => Kind::Idle,
            Shape::Burst(_) => Kind::Burst,
        }
    }

    /// WebSocket connections the run opens (the mixed scenario's publisher included).
    pub fn connections(&self) -> usize {
        match &self.shape {
            Shape::Fanout(p) => p.rooms * p.members,
            Shape::Mixed(p) => p.users + usize::from(p.personal_share > 0.0),
            Shape::Idle(p) => p.connections,
            Shape::Burst(p) => p.members,
        }
    }

    /// One line saying what the run does.
    pub fn summary(&self) -> String {
        match &self.shape {
            Shape::Fanout(p) => format!(
                "fanout: {} rooms x {} members, {} sender(s)/room at {}, window {}, {} B payload",
                p.rooms, p.members, p.senders, p.rate, p.window, self.payload
            ),
            Shape::Mixed(p) => format!(
                "mixed: {} users (personal room + {}-member group room), {} msg/s ({}% personal), {} reconnects/s",
                p.users,
                p.group_size,
                p.rate,
                (p.personal_share * 100.0).round(),
                p.churn
            ),
            Shape::Idle(p) => format!(
                "idle: {} connections in rooms of {}",
                p.connections, p.room_size
            ),
            Shape::Burst(p) => format!(
                "burst: one room of {} present members, {} measured message(s) ({} warm-up), {} s apart",
                p.members, p.bursts, p.warmup_bursts, p.interval_secs
            ),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = |v: f64, what: &str| -> anyhow::Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("{what} must be a positive number, not {v}");
            }
            Ok(())
        };
        if !(self.warmup_secs.is_finite() && self.warmup_secs >= 0.0) {
            bail!("warmup_secs must be zero or more");
        }
        positive(self.duration_secs, "duration_secs")?;
        positive(self.ramp, "ramp")?;
        if self.payload < crate::payload::MIN_SIZE || self.payload > DEFAULT_TEXT_LIMIT {
            bail!(
                "payload must be {}..={} bytes (the stamp needs the minimum; the node's text limit is the maximum)",
                crate::payload::MIN_SIZE,
                DEFAULT_TEXT_LIMIT
            );
        }
        if self.source_addrs == Some(0) {
            bail!("source_addrs must be 1..=255");
        }
        match &self.shape {
            Shape::Fanout(p) => {
                if p.rooms == 0 || p.members == 0 {
                    bail!("fanout needs at least one room and one member");
                }
                if p.senders == 0 || p.senders > p.members {
                    bail!("fanout senders must be 1..=members ({})", p.members);
                }
                if p.window == 0 {
                    bail!("fanout window must be at least 1");
                }
                if let Rate::PerSecond(r) = p.rate {
                    positive(r, "fanout rate")?;
                }
            }
            Shape::Mixed(p) => {
                if p.users < 2 || p.group_size == 0 {
                    bail!("mixed needs at least two users and a group size of at least one");
                }
                positive(p.rate, "mixed rate")?;
                if !(0.0..=1.0).contains(&p.personal_share) {
                    bail!("mixed personal_share must be between 0 and 1");
                }
                if !(p.churn.is_finite() && p.churn >= 0.0) {
                    bail!("mixed churn must be zero or more");
                }
            }
            Shape::Idle(p) => {
                if p.connections == 0 || p.room_size == 0 {
                    bail!("idle needs at least one connection and a room size of at least one");
                }
                if !(p.settle_secs.is_finite() && p.settle_secs >= 0.0) {
                    bail!("idle settle_secs must be zero or more");
                }
            }
            Shape::Burst(p) => {
                if p.members < 2 {
                    bail!("burst needs at least two members");
                }
                if p.bursts == 0 {
                    bail!("burst needs at least one measured message");
                }
                positive(p.interval_secs, "burst interval_secs")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses_with_its_issue_shape() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text, name).expect("built-in scenarios are valid");
            assert_eq!(&s.name, name, "the file's name matches its file name");
        }
        let s = Scenario::load("fanout-100x10").expect("built in");
        assert_eq!(s.connections(), 1000);
        assert_eq!(s.expect.delivery_p99_ms, Some(5.0));
        let s = Scenario::load("saturation-50x50").expect("built in");
        match &s.shape {
            Shape::Fanout(p) => {
                assert_eq!(p.rate, Rate::Max);
                assert_eq!((p.rooms, p.members), (50, 50));
            }
            other => panic!("saturation is a fanout, got {other:?}"),
        }
        assert_eq!(
            Scenario::load("idle-20k").expect("built in").connections(),
            20_000
        );
        assert_eq!(
            Scenario::load("burst-5000")
                .expect("built in")
                .connections(),
            5000
        );
        // 2,000 users and the service publisher.
        assert_eq!(
            Scenario::load("mixed").expect("built in").connections(),
            2001
        );
    }

    #[test]
    fn kinds_have_defaults_and_unknown_names_are_refused() {
        for kind in ["fanout", "mixed", "idle", "burst"] {
            let s = Scenario::load(kind).expect("defaults are valid");
            assert_eq!(s.kind().as_str(), kind);
        }
        let err = Scenario::load("nonsense").expect_err("no such scenario");
        assert!(err.to_string().contains("fanout-100x10"), "{err}");
    }

    #[test]
    fn rates_read_numbers_and_max() {
        let s = Scenario::parse("kind = \"fanout\"\n[fanout]\nrate = 2.5\n", "x").expect("valid");
        assert!(
            matches!(s.shape, Shape::Fanout(FanoutParams { rate: Rate::PerSecond(r), .. }) if r == 2.5)
        );
        let s = Scenario::parse("kind = \"fanout\"\n[fanout]\nrate = 7\n", "x").expect("valid");
        assert!(
            matches!(s.shape, Shape::Fanout(FanoutParams { rate: Rate::PerSecond(r), .. }) if r == 7.0)
        );
        let s =
            Scenario::parse("kind = \"fanout\"\n[fanout]\nrate = \"max\"\n", "x").expect("valid");
        assert!(matches!(
            s.shape,
            Shape::Fanout(FanoutParams {
                rate: Rate::Max,
                ..
            })
        ));
        assert!(Scenario::parse("kind = \"fanout\"\n[fanout]\nrate = \"fast\"\n", "x").is_err());
        assert!(Scenario::parse("kind = \"fanout\"\n[fanout]\nrate = -1\n", "x").is_err());
        assert_eq!("MAX".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("20".parse::<Rate>(), Ok(Rate::PerSecond(20.0)));
    }

    #[test]
    fn mistakes_in_files_are_refused() {
        // A misspelt key.
        assert!(Scenario::parse("kind = \"fanout\"\n[fanout]\nroom = 3\n", "x").is_err());
        // A section of another kind.
        let err = Scenario::parse("kind = \"idle\"\n[fanout]\nrooms = 3\n", "x")
            .expect_err("wrong section");
        assert!(format!("{err:#}").contains("[fanout]"), "{err:#}");
        // More senders than members.
        assert!(
            Scenario::parse(
                "kind = \"fanout\"\n[fanout]\nmembers = 2\nsenders = 3\n",
                "x"
            )
            .is_err()
        );
        // A payload too small for the stamp, and one over the text limit.
        assert!(Scenario::parse("kind = \"fanout\"\npayload = 4\n", "x").is_err());
        assert!(Scenario::parse("kind = \"fanout\"\npayload = 20000\n", "x").is_err());
        assert!(Scenario::parse("kind = \"mixed\"\n[mixed]\npersonal_share = 1.5\n", "x").is_err());
    }

    #[test]
    fn overrides_replace_values_and_must_fit_the_kind() {
        let mut s = Scenario::load("fanout-100x10").expect("built in");
        let o = Overrides {
            rooms: Some(3),
            members: Some(4),
            rate: Some(Rate::Max),
            duration_secs: Some(2.0),
            ..Overrides::default()
        };
        s.apply(&o).expect("fits a fanout");
        assert_eq!(s.connections(), 12);
        assert_eq!(s.duration_secs, 2.0);
        assert!(matches!(
            s.shape,
            Shape::Fanout(FanoutParams {
                rate: Rate::Max,
                window: 64,
                ..
            })
        ));

        let mut idle = Scenario::load("idle-20k").expect("built in");
        let err = idle
            .apply(&Overrides {
                rooms: Some(3),
                ..Overrides::default()
            })
            .expect_err("rooms is not an idle setting");
        assert!(err.to_string().contains("--rooms"), "{err}");

        let mut mixed = Scenario::load("mixed").expect("built in");
        assert!(
            mixed
                .apply(&Overrides {
                    rate: Some(Rate::Max),
                    ..Overrides::default()
                })
                .is_err()
        );
        // An override that breaks validation is refused too.
        let mut s = Scenario::load("fanout").expect("defaults");
        assert!(
            s.apply(&Overrides {
                senders: Some(100),
                ..Overrides::default()
            })
            .is_err()
        );
    }
}
