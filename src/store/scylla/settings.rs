//! Reading the `[scylla]` settings: contact points, consistency, and the replication map that
//! `chatnode migrate` gives the keyspace. `Settings::validate` calls [`check`], so a bad value is
//! refused at start with the name of the setting.

use ::scylla::statement::Consistency;

use crate::config::ScyllaSettings;

/// The contact points: comma-separated `host:port`, blanks ignored.
pub fn contact_points(nodes: &str) -> Vec<String> {
    nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A consistency level by its CQL name (`LOCAL_QUORUM`, `quorum`, `local-one`, ...). `ANY` and
/// the serial levels are refused: they cannot serve both reads and writes.
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    let name = name.trim().to_ascii_uppercase().replace('-', "_");
    Some(match name.as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => return None,
    })
}

/// Whether `name` can name a keyspace without quoting: a letter or digit, then up to 47
/// letters, digits or underscores (it is put into CQL text, so nothing else may pass).
pub fn valid_keyspace(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The CQL replication map for a `replication` setting:
/// - `"3"`: NetworkTopologyStrategy with 3 replicas in every datacenter;
/// - `"dc1:3,dc2:2"`: NetworkTopologyStrategy with that many replicas per datacenter.
///
/// SimpleStrategy is not offered: it ignores racks and datacenters, and ScyllaDB does not
/// support it with tablets.
pub fn replication_map(replication: &str) -> Result<String, String> {
    let replication = replication.trim();
    let factor = |s: &str| -> Result<u32, String> {
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=32).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{s}` is not a replication factor between 1 and 32"
            )),
        }
    };
    if !replication.contains(':') {
        let n = factor(replication)?;
        return Ok(format!(
            "{{'class': 'NetworkTopologyStrategy', 'replication_factor': {n}}}"
        ));
    }
    let mut entries = Vec::new();
    for part in replication.split(',') {
        let Some((dc, n)) = part.split_once(':') else {
            return Err(format!("`{part}` is not `datacenter:factor`"));
        };
        let dc = dc.trim();
        let dc_ok = !dc.is_empty()
            && dc.len() <= 64
            && dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !dc_ok {
            return Err(format!("`{dc}` is not a datacenter name"));
        }
        entries.push(format!("'{dc}': {}", factor(n)?));
    }
    Ok(format!(
        "{{'class': 'NetworkTopologyStrategy', {}}}",
        entries.join(", ")
    ))
}

/// A setting that is text even when it looks like a number: `CHATNODE_SCYLLA_REPLICATION=3` or
/// a numeric password arrive from the environment as numbers.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Lenient {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

impl From<Lenient> for String {
    fn from(value: Lenient) -> Self {
        match value {
            Lenient::Text(s) => s,
            Lenient::Unsigned(n) => n.to_string(),
            Lenient::Signed(n) => n.to_string(),
            Lenient::Float(n) => n.to_string(),
            Lenient::Bool(b) => b.to_string(),
        }
    }
}

/// Deserializes a text setting that may have arrived as a number (see [`Lenient`]).
pub fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    <Lenient as serde::Deserialize>::deserialize(d).map(String::from)
}

/// Deserializes an optional text setting that may have arrived as a number.
pub fn lenient_opt_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    <Option<Lenient> as serde::Deserialize>::deserialize(d).map(|v| v.map(String::from))
}

/// Checks the settings a ScyllaDB node needs; the error names the bad setting.
pub fn check(settings: &ScyllaSettings) -> Result<(), (&'static str, String)> {
    let nodes = settings
        .nodes
        .as_deref()
        .map(contact_points)
        .unwrap_or_default();
    if nodes.is_empty() {
        return Err((
            "scylla.nodes",
            "is required with store = \"scylla\": comma-separated host:port contact points".into(),
        ));
    }
    for node in &nodes {
        let port_ok = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(("scylla.nodes", format!("`{node}` is not host:port")));
        }
    }
    if !valid_keyspace(&settings.keyspace) {
        return Err((
            "scylla.keyspace",
            "must be 1 to 48 letters, digits or underscores, starting with a letter or digit"
                .into(),
        ));
    }
    replication_map(&settings.replication).map_err(|e| ("scylla.replication", e))?;
    if parse_consistency(&settings.consistency).is_none() {
        return Err((
            "scylla.consistency",
            "must be one of ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE"
                .into(),
        ));
    }
    if settings.request_timeout_ms == 0 {
        return Err(("scylla.request_timeout_ms", "must be at least 1".into()));
    }
    if settings.password.is_some() && settings.username.is_none() {
        return Err((
            "scylla.username",
            "is required when scylla.password is set".into(),
        ));
    }
    if settings.tls && settings.tls_ca_file.is_none() {
        return Err((
            "scylla.tls_ca_file",
            "is required when scylla.tls is on (the CA that signed the nodes' certificates)".into(),
        ));
    }
    if settings.tls_cert_file.is_some() != settings.tls_key_file.is_some() {
        return Err((
            "scylla.tls_key_file",
            "and scylla.tls_cert_file go together (a client certificate and its key)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(nodes: &str) -> ScyllaSettings {
        ScyllaSettings {
            nodes: Some(nodes.into()),
            ..ScyllaSettings::default()
        }
    }

    #[test]
    fn contact_points_are_split_and_trimmed() {
        assert_eq!(
            contact_points(" a:9042, b:19042 ,,"),
            vec!["a:9042", "b:19042"]
        );
        assert!(contact_points(" , ").is_empty());
    }

    #[test]
    fn consistency_names() {
        assert_eq!(
            parse_consistency("LOCAL_QUORUM"),
            Some(Consistency::LocalQuorum)
        );
        assert_eq!(parse_consistency("local-one"), Some(Consistency::LocalOne));
        assert_eq!(parse_consistency(" quorum "), Some(Consistency::Quorum));
        assert_eq!(parse_consistency("ANY"), None);
        assert_eq!(parse_consistency("SERIAL"), None);
    }

    #[test]
    fn replication_maps() {
        assert_eq!(
            replication_map("3").as_deref(),
            Ok("{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")
        );
        assert_eq!(
            replication_map("dc1:3, eu-west_1:2").as_deref(),
            Ok("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'eu-west_1': 2}")
        );
        for bad in ["0", "x", "", "dc1", "dc1:0", "dc'1:3", "dc1:3,", ":3", "99"] {
            assert!(replication_map(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keyspace_names() {
        assert!(valid_keyspace("chatnode"));
        assert!(valid_keyspace("t_123_abc"));
        assert!(!valid_keyspace(""));
        assert!(!valid_keyspace("_x"));
        assert!(!valid_keyspace("a;DROP"));
        assert!(!valid_keyspace(&"a".repeat(49)));
    }

    #[test]
    fn numbers_are_read_as_text_and_the_password_is_not_shown() {
        use figment::Figment;
        use figment::providers::{Format, Serialized, Toml};
        let toml = "nodes = \"a:9042\"\nreplication = 1\nusername = 7\npassword = 123456\n";
        let s: ScyllaSettings = Figment::from(Serialized::defaults(ScyllaSettings::default()))
            .merge(Toml::string(toml))
            .extract()
            .expect("settings");
        assert_eq!(s.replication, "1");
        assert_eq!(s.username.as_deref(), Some("7"));
        assert_eq!(s.password.as_deref(), Some("123456"));
        assert!(check(&s).is_ok());
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("123456") && shown.contains("<redacted>"),
            "{shown}"
        );
        let defaults: ScyllaSettings =
            Figment::from(Serialized::defaults(ScyllaSettings::default()))
                .extract()
                .expect("defaults");
        assert_eq!(defaults.password, None);
        assert_eq!(defaults.consistency, "LOCAL_QUORUM");
    }

    #[test]
    fn the_node_accepts_scylla_only_with_nodes() {
        use crate::config::{Settings, StoreBackend};
        let mut s = Settings {
            store: StoreBackend::Scylla,
            ..Settings::default()
        };
        let err = s.validate().expect_err("no nodes");
        assert!(err.to_string().contains("scylla.nodes"), "{err}");
        s.scylla.nodes = Some("scylla:9042".into());
        s.validate().expect("nodes given");
        s.scylla.consistency = "SERIAL".into();
        let err = s.validate().expect_err("serial consistency");
        assert!(err.to_string().contains("scylla.consistency"), "{err}");
    }

    #[test]
    fn checks_name_the_setting() {
        assert!(check(&settings("scylla:9042")).is_ok());
        assert!(check(&settings("10.0.0.1:9042, 10.0.0.2:9042")).is_ok());
        let key = |s: &ScyllaSettings| check(s).err().map(|(k, _)| k);
        assert_eq!(key(&ScyllaSettings::default()), Some("scylla.nodes"));
        assert_eq!(key(&settings("scylla")), Some("scylla.nodes"));
        assert_eq!(key(&settings("scylla:0")), Some("scylla.nodes"));
        assert_eq!(
            key(&ScyllaSettings {
                keyspace: "a-b".into(),
                ..settings("h:1")
            }),
            Some("scylla.keyspace")
        );
        assert_eq!(
            key(&ScyllaSettings {
                replication: "0".into(),
                ..settings("h:1")
            }),
            Some("scylla.replication")
        );
        assert_eq!(
            key(&ScyllaSettings {
                consistency: "ANY".into(),
                ..settings("h:1")
            }),
            Some("scylla.consistency")
        );
        assert_eq!(
            key(&ScyllaSettings {
                request_timeout_ms: 0,
                ..settings("h:1")
            }),
            Some("scylla.request_timeout_ms")
        );
        assert_eq!(
            key(&ScyllaSettings {
                password: Some("pw".into()),
                ..settings("h:1")
            }),
            Some("scylla.username")
        );
    }
}
