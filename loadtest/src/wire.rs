//! The frames of docs/protocol.md §3 as a client writes and reads them: MessagePack maps with
//! string keys. Requests are small structs encoded with named fields; server frames are decoded in
//! one pass into [`Frame`], borrowing strings from the bytes and skipping fields the harness does
//! not use, so a `msg` costs no allocation.
//!
//! Frames made only of scalars and strings (`msg`, `sent`, `receipt`, `presence`, ..., every
//! frame of a run's hot path) are read by a small hand-written reader that checks UTF-8 only
//! for the strings it returns and skips the rest by length; frames with lists or maps
//! (`entered`, `page`, `hello`) go through serde. The harness reads hundreds of thousands of
//! frames a second on one core, so this is where its own CPU goes.

use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Enter<'a> {
    t: &'static str,
    r: u32,
    group: &'a str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
    limit: u32,
}

#[derive(Serialize)]
struct Send<'a> {
    t: &'static str,
    r: u32,
    group: &'a str,
    room: &'a str,
    kind: &'static str,
    text: &'a str,
    cmid: &'a str,
}

fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    // Encoding a struct of strings and integers into a Vec cannot fail.
    rmp_serde::to_vec_named(frame).expect("request frames always encode")
}

/// `enter {group, room, since?, limit}`.
pub fn enter(r: u32, group: &str, room: &str, since: Option<u64>, limit: u32) -> Vec<u8> {
    encode(&Enter {
        t: "enter",
        r,
        group,
        room,
        since,
        limit,
    })
}

/// `send {group, room, kind: "text", text, cmid}`.
pub fn send_text(r: u32, group: &str, room: &str, text: &str, cmid: &str) -> Vec<u8> {
    encode(&Send {
        t: "send",
        r,
        group,
        room,
        kind: "text",
        text,
        cmid,
    })
}

/// The `limits` of `hello`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Limits {
    #[serde(default)]
    pub frame: u64,
    #[serde(default)]
    pub text: u64,
    #[serde(default)]
    pub rate: u64,
}

/// A message inside `entered` or `page`.
#[derive(Debug, Deserialize)]
pub struct ListedMsg<'a> {
    pub id: u64,
    #[serde(borrow, default)]
    pub text: Option<&'a str>,
}

/// Any server frame, with the fields the harness reads.
#[derive(Debug, Default, Deserialize)]
pub struct Frame<'a> {
    #[serde(borrow)]
    pub t: &'a str,
    #[serde(default)]
    pub r: Option<u32>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(borrow, default)]
    pub room: Option<&'a str>,
    #[serde(borrow, default)]
    pub text: Option<&'a str>,
    #[serde(borrow, default)]
    pub code: Option<&'a str>,
    #[serde(borrow, default)]
    pub message: Option<&'a str>,
    #[serde(default)]
    pub more: Option<bool>,
    #[serde(borrow, default)]
    pub msgs: Option<Vec<ListedMsg<'a>>>,
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Decodes one server frame.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, rmp_serde::decode::Error> {
    match decode_flat(bytes) {
        Some(frame) => Ok(frame),
        None => rmp_serde::from_slice(bytes),
    }
}

/// Reads a frame whose values are all scalars or strings; `None` for anything else (a list, a
/// map, a malformed frame), which serde then reads or refuses. Built on `rmp`'s readers over
/// a byte slice (which advance the slice); only the strings it returns are checked as UTF-8.
fn decode_flat(bytes: &[u8]) -> Option<Frame<'_>> {
    use rmp::decode::{read_bool, read_int, read_map_len};
    let mut rd = bytes;
    let fields = read_map_len(&mut rd).ok()?;
    let mut frame = Frame::default();
    let mut has_t = false;
    for _ in 0..fields {
        match take_str_bytes(&mut rd)? {
            b"t" => {
                frame.t = take_str(&mut rd)?;
                has_t = true;
            }
            b"r" => frame.r = Some(read_int(&mut rd).ok()?),
            b"id" => frame.id = Some(read_int(&mut rd).ok()?),
            b"room" => frame.room = Some(take_str(&mut rd)?),
            b"text" => frame.text = Some(take_str(&mut rd)?),
            b"code" => frame.code = Some(take_str(&mut rd)?),
            b"message" => frame.message = Some(take_str(&mut rd)?),
            b"more" => frame.more = Some(read_bool(&mut rd).ok()?),
            _ => skip_scalar(&mut rd)?,
        }
    }
    (has_t && rd.is_empty()).then_some(frame)
}

/// Takes `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rd.len() < n {
        return None;
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Some(head)
}

/// A string's bytes, borrowed and not checked.
fn take_str_bytes<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()?;
    take(rd, usize::try_from(len).ok()?)
}

fn take_str<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(take_str_bytes(rd)?).ok()
}

/// Skips one value that is not a list or a map (`None` for those).
fn skip_scalar(rd: &mut &[u8]) -> Option<()> {
    use rmp::Marker as M;
    use rmp::decode::RmpRead;
    let len = match rmp::decode::read_marker(rd).ok()? {
        M::FixPos(_) | M::FixNeg(_) | M::Null | M::True | M::False => 0,
        M::U8 | M::I8 => 1,
        M::U16 | M::I16 => 2,
        M::U32 | M::I32 | M::F32 => 4,
        M::U64 | M::I64 | M::F64 => 8,
        M::FixStr(n) => u32::from(n),
        M::Str8 | M::Bin8 => u32::from(rd.read_data_u8().ok()?),
        M::Str16 | M::Bin16 => u32::from(rd.read_data_u16().ok()?),
        M::Str32 | M::Bin32 => rd.read_data_u32().ok()?,
        _ => return None,
    };
    take(rd, usize::try_from(len).ok()?).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the node's codec writes for `msg` (field order and extra fields included).
    #[derive(Serialize)]
    struct ServerMsg<'a> {
        t: &'a str,
        group: &'a str,
        room: &'a str,
        id: u64,
        from: &'a str,
        kind: &'a str,
        text: &'a str,
        ts: i64,
        unread: u32,
        cmid: &'a str,
    }

    #[test]
    fn server_msgs_decode_without_the_fields_we_skip() {
        let bytes = rmp_serde::to_vec_named(&ServerMsg {
            t: "msg",
            group: "g",
            room: "r1",
            id: u64::MAX - 1,
            from: "u1",
            kind: "text",
            text: "123 4 xx",
            ts: 1_700_000_000_000,
            unread: 3,
            cmid: "c1",
        })
        .expect("encode");
        let frame = decode(&bytes).expect("decode");
        assert_eq!(frame.t, "msg");
        assert_eq!(frame.id, Some(u64::MAX - 1));
        assert_eq!(frame.room, Some("r1"));
        assert_eq!(frame.text, Some("123 4 xx"));
        assert_eq!(frame.r, None);
    }

    #[test]
    fn requests_are_maps_with_string_keys() {
        let bytes = enter(7, "g", "r", Some(99), 200);
        let value = rmpv::decode::read_value(&mut bytes.as_slice()).expect("a MessagePack value");
        let map = value.as_map().expect("a map");
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("t")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("enter")
        );
        assert_eq!(get("r").and_then(|v| v.as_u64()), Some(7));
        assert_eq!(get("since").and_then(|v| v.as_u64()), Some(99));
        let no_since = enter(1, "g", "r", None, 1);
        let value =
            rmpv::decode::read_value(&mut no_since.as_slice()).expect("a MessagePack value");
        assert!(
            value
                .as_map()
                .is_some_and(|m| m.iter().all(|(k, _)| k.as_str() != Some("since")))
        );

        let bytes = send_text(3, "g", "r", "hello", "c-1");
        let value = rmpv::decode::read_value(&mut bytes.as_slice()).expect("a MessagePack value");
        let map = value.as_map().expect("a map");
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("kind") && v.as_str() == Some("text"))
        );
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("cmid") && v.as_str() == Some("c-1"))
        );
    }

    #[test]
    fn entered_hello_and_err_decode() {
        #[derive(Serialize)]
        struct M<'a> {
            id: u64,
            from: &'a str,
            text: &'a str,
        }
        #[derive(Serialize)]
        struct Entered<'a> {
            t: &'a str,
            r: u32,
            group: &'a str,
            room: &'a str,
            members: u32,
            present: Vec<&'a str>,
            cursor: u64,
            msgs: Vec<M<'a>>,
            more: bool,
        }
        let bytes = rmp_serde::to_vec_named(&Entered {
            t: "entered",
            r: 5,
            group: "g",
            room: "r",
            members: 2,
            present: vec!["a", "b"],
            cursor: 0,
            msgs: vec![
                M {
                    id: 4,
                    from: "a",
                    text: "1 2 x",
                },
                M {
                    id: 9,
                    from: "b",
                    text: "t",
                },
            ],
            more: true,
        })
        .expect("encode");
        let frame = decode(&bytes).expect("decode");
        assert_eq!(frame.r, Some(5));
        assert_eq!(frame.more, Some(true));
        let ids: Vec<u64> = frame
            .msgs
            .unwrap_or_default()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![4, 9]);

        #[derive(Serialize)]
        struct Hello<'a> {
            t: &'a str,
            user: &'a str,
            node: u16,
            proto: u8,
            heartbeat: u64,
            limits: Limits2,
        }
        #[derive(Serialize)]
        struct Limits2 {
            frame: u64,
            text: u64,
            rate: u64,
        }
        let bytes = rmp_serde::to_vec_named(&Hello {
            t: "hello",
            user: "u",
            node: 0,
            proto: 1,
            heartbeat: 25,
            limits: Limits2 {
                frame: 65536,
                text: 16384,
                rate: 30,
            },
        })
        .expect("encode");
        let frame = decode(&bytes).expect("decode");
        assert_eq!(frame.limits.map(|l| l.rate), Some(30));

        assert!(decode(&[0xc1]).is_err());
    }

    #[test]
    fn the_flat_reader_agrees_with_serde_and_hands_the_rest_over() {
        #[derive(Serialize)]
        struct Every<'a> {
            t: &'a str,
            r: u32,
            id: u64,
            room: &'a str,
            text: &'a str,
            code: &'a str,
            message: &'a str,
            more: bool,
            neg: i64,
            big: u64,
            float: f64,
            nothing: Option<u8>,
            long: &'a str,
        }
        let long = "x".repeat(70_000);
        let bytes = rmp_serde::to_vec_named(&Every {
            t: "err",
            r: 70_000,
            id: 1 << 40,
            room: "r",
            text: "1 2 caf\u{e9}",
            code: "bad_frame",
            message: "why",
            more: false,
            neg: -70_000,
            big: u64::MAX,
            float: 1.5,
            nothing: None,
            long: &long,
        })
        .expect("encode");
        let flat = decode_flat(&bytes).expect("a flat frame");
        let full: Frame<'_> = rmp_serde::from_slice(&bytes).expect("serde");
        assert_eq!(format!("{flat:?}"), format!("{full:?}"));
        assert_eq!(flat.text, Some("1 2 caf\u{e9}"));
        assert_eq!(flat.r, Some(70_000));

        // Lists and maps go to serde; truncated or invalid input is refused by both.
        let entered =
            rmp_serde::to_vec_named(&serde_json::json!({"t": "page", "msgs": []})).expect("encode");
        assert!(decode_flat(&entered).is_none());
        assert!(decode(&entered).is_ok());
        assert!(decode_flat(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad_utf8 = rmp_serde::to_vec_named(&serde_json::json!({"t": "msg", "text": "ab"}))
            .expect("encode");
        let at = bad_utf8.len() - 1;
        bad_utf8[at] = 0xff;
        assert!(decode_flat(&bad_utf8).is_none());
        assert!(decode(&bad_utf8).is_err());
    }
}
