//! What the fuzz targets share with the seed corpus generator (`src/bin/corpus.rs`): how a
//! client writes a request frame, how a target's input is cut into its parts, the settings the
//! targets run with, and the seeds themselves, so every seed is made by the same encoders the
//! targets check against and stays valid as the node changes.

use chatnode::protocol::Request;
use serde::Serialize;

pub mod seeds;

/// The text limit the `frame` target decodes with: small, so short inputs reach `too_large`.
pub const FRAME_MAX_TEXT: usize = 256;

/// The HS256 secret the `token` target verifies with and the token seeds are signed with.
pub const TOKEN_SECRET: &[u8] = b"chatnode-fuzz-secret";

/// A request as a client writes it: only the fields it has, string keys (PROTOCOL.md §3).
#[derive(Serialize, Default)]
struct ClientFrame<'a> {
    t: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

/// The MessagePack frame a client sends for `request` (with `r` when given).
pub fn frame_of(request: &Request, r: Option<u32>) -> Vec<u8> {
    let t = request.kind();
    let group = request.group().map(|g| g.as_str());
    let base = ClientFrame {
        t,
        r,
        group,
        ..ClientFrame::default()
    };
    let frame = match request {
        Request::Ping | Request::Sub { .. } | Request::Unsub { .. } => base,
        Request::Enter {
            room, since, limit, ..
        } => ClientFrame {
            room: Some(room.as_str()),
            since: *since,
            limit: i64::try_from(*limit).ok(),
            ..base
        },
        Request::Leave { room, .. } | Request::Typing { room, .. } => ClientFrame {
            room: Some(room.as_str()),
            ..base
        },
        Request::Send(send) => ClientFrame {
            room: Some(send.room.as_str()),
            kind: Some(send.kind.as_str()),
            text: send.text.as_deref(),
            media: send.media.as_deref(),
            cmid: Some(&send.cmid),
            from: send.from.as_ref().map(|f| f.as_str()),
            ..base
        },
        Request::Read { room, id, .. } | Request::Delete { room, id, .. } => ClientFrame {
            room: Some(room.as_str()),
            id: Some(*id),
            ..base
        },
        Request::History {
            room,
            before,
            limit,
            ..
        } => ClientFrame {
            room: Some(room.as_str()),
            before: *before,
            limit: i64::try_from(*limit).ok(),
            ..base
        },
        Request::Edit { room, id, text, .. } => ClientFrame {
            room: Some(room.as_str()),
            id: Some(*id),
            text: Some(text),
            ..base
        },
    };
    // A struct of strings and integers always encodes into memory.
    rmp_serde::to_vec_named(&frame).unwrap_or_default()
}

/// Cuts an input into `N` lines (split at `\n`; missing ones are empty) and the bytes after
/// them: how the `media` and `token` targets get several header values out of one input.
pub fn lines<const N: usize>(data: &[u8]) -> ([&[u8]; N], &[u8]) {
    let mut parts = [&data[..0]; N];
    let mut rest = data;
    for part in &mut parts {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => {
                *part = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *part = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    (parts, rest)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::seeds;

    /// The committed seed corpus (`fuzz/corpus/`) is what the encoders make now and the node
    /// still accepts. `CHATNODE_FUZZ_WRITE_CORPUS=1 cargo test -p chatnode-fuzz` rewrites it.
    #[test]
    fn the_committed_corpus_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let all = seeds::all();
        for seed in &all {
            if let Err(e) = seeds::check(seed.target, &seed.bytes) {
                panic!("seed {}/{} is refused: {e}", seed.target, seed.name);
            }
        }
        if std::env::var_os("CHATNODE_FUZZ_WRITE_CORPUS").is_some() {
            seeds::write(&dir, &all).expect("the corpus is written");
        }
        let problems = seeds::check_dir(&dir, &all);
        assert!(
            problems.is_empty(),
            "{}\nregenerate with CHATNODE_FUZZ_WRITE_CORPUS=1 cargo test -p chatnode-fuzz",
            problems.join("\n")
        );
    }
}
