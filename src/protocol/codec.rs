//! MessagePack encoding and decoding of frames, with the limits of docs/protocol.md §3.6.
//!
//! Decoding is one typed pass over the bytes (strings borrowed, unknown keys skipped); only when
//! that fails does a second, lenient pass classify the error (`bad_frame` or `bad_request`) and
//! recover the request's `r` so the `err` can carry it.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::frame::{ErrorCode, MessageKind, Request, SendRequest, ServerFrame};
use crate::ids::{GroupId, RoomId, UserId};

/// The largest `limit` a history page or `enter` may ask for.
pub const MAX_PAGE: usize = 200;
/// The page size when a request names none.
pub const DEFAULT_PAGE: usize = 50;
/// The longest `cmid`, in bytes.
pub const MAX_CMID: usize = 64;

/// Why a client frame was refused. The connection stays open after every one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DecodeError {
    pub r: Option<u32>,
    pub code: ErrorCode,
    pub message: &'static str,
}

impl DecodeError {
    fn new(r: Option<u32>, code: ErrorCode, message: &'static str) -> Self {
        Self { r, code, message }
    }
}

/// A request as it arrives: every field optional, strings borrowed from the frame.
#[derive(Default)]
struct RawFrame<'a> {
    t: Option<&'a str>,
    r: Option<u32>,
    group: Option<&'a str>,
    room: Option<&'a str>,
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<i64>,
    id: Option<u64>,
    kind: Option<&'a str>,
    text: Option<&'a str>,
    media: Option<&'a str>,
    cmid: Option<&'a str>,
    from: Option<&'a str>,
}

/// A map key as a frame's reader sees it: a string, or any other value, which names no field
/// (PROTOCOL.md §3: string keys, unknown keys ignored). serde's derived readers would take an
/// integer key as the struct's field of that position.
enum Key<'a> {
    Str(&'a str),
    Other,
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Str(s))
            }
            fn visit_str<E>(self, _: &str) -> Result<Key<'de>, E> {
                // Only a string that is not in the frame's bytes: not one of ours.
                Ok(Key::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_unit<E>(self) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_none<E>(self) -> Result<Key<'de>, E> {
                Ok(Key::Other)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
                IgnoredAny::deserialize(d).map(|_| Key::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Key::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Key::Other)
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(self, e: A) -> Result<Key<'de>, A::Error> {
                // MessagePack extension types arrive as enums.
                IgnoredAny.visit_enum(e).map(|_| Key::Other)
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// Reads a frame's map with `field`, called for each string key with the entries' reader; the
/// values of other keys are skipped. A second value for one field is an error, as in serde's
/// derived readers.
fn read_map<'de, A, T: Default>(
    mut map: A,
    mut field: impl FnMut(&mut T, &'de str, &mut A) -> Result<bool, A::Error>,
) -> Result<T, A::Error>
where
    A: serde::de::MapAccess<'de>,
{
    let mut out = T::default();
    // The fields read so far (a frame has 13), kept without allocating: this is every frame's path.
    let mut seen: [&'de str; 16] = [""; 16];
    let mut seen_len = 0;
    while let Some(key) = map.next_key::<Key<'de>>()? {
        let known = match key {
            Key::Str(name) => {
                if seen[..seen_len].contains(&name) {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate field `{name}`"
                    )));
                }
                let known = field(&mut out, name, &mut map)?;
                if known && seen_len < seen.len() {
                    seen[seen_len] = name;
                    seen_len += 1;
                }
                known
            }
            Key::Other => false,
        };
        if !known {
            map.next_value::<serde::de::IgnoredAny>()?;
        }
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for RawFrame<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FrameVisitor;
        impl<'de> serde::de::Visitor<'de> for FrameVisitor {
            type Value = RawFrame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                read_map(map, |raw: &mut RawFrame<'de>, name, map| {
                    match name {
                        "t" => raw.t = map.next_value()?,
                        "r" => raw.r = map.next_value()?,
                        "group" => raw.group = map.next_value()?,
                        "room" => raw.room = map.next_value()?,
                        "since" => raw.since = map.next_value()?,
                        "before" => raw.before = map.next_value()?,
                        "limit" => raw.limit = map.next_value()?,
                        "id" => raw.id = map.next_value()?,
                        "kind" => raw.kind = map.next_value()?,
                        "text" => raw.text = map.next_value()?,
                        "media" => raw.media = map.next_value()?,
                        "cmid" => raw.cmid = map.next_value()?,
                        "from" => raw.from = map.next_value()?,
                        _ => return Ok(false),
                    }
                    Ok(true)
                })
            }
        }
        deserializer.deserialize_map(FrameVisitor)
    }
}

/// True when `bytes` starts with a MessagePack map marker (fixmap, map16, map32).
fn is_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

/// Classifies a frame that failed the typed pass: not a map or no string `t` is `bad_frame`,
/// anything else (a field of the wrong type) is `bad_request`.
fn classify(bytes: &[u8]) -> DecodeError {
    let mut cursor = bytes;
    let Ok(value) = rmpv::decode::read_value(&mut cursor) else {
        return DecodeError::new(
            lenient_r(bytes),
            ErrorCode::BadFrame,
            "not a MessagePack map",
        );
    };
    let Some(map) = value.as_map() else {
        return DecodeError::new(None, ErrorCode::BadFrame, "not a MessagePack map");
    };
    let field = |name: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    let r = field("r")
        .and_then(rmpv::Value::as_u64)
        .and_then(|r| u32::try_from(r).ok());
    match field("t") {
        Some(t) if t.is_str() => {
            DecodeError::new(r, ErrorCode::BadRequest, "a field has the wrong type")
        }
        _ => DecodeError::new(r, ErrorCode::BadFrame, "the frame has no string `t`"),
    }
}

fn group_of(r: Option<u32>, s: Option<&str>) -> Result<GroupId, DecodeError> {
    let s = s.ok_or(DecodeError::new(
        r,
        ErrorCode::BadRequest,
        "`group` is required",
    ))?;
    GroupId::parse(s).map_err(|_| {
        DecodeError::new(
            r,
            ErrorCode::BadRequest,
            "`group` must be 1..=64 bytes of [A-Za-z0-9_.-]",
        )
    })
}

fn room_of(r: Option<u32>, s: Option<&str>) -> Result<RoomId, DecodeError> {
    let s = s.ok_or(DecodeError::new(
        r,
        ErrorCode::BadRequest,
        "`room` is required",
    ))?;
    RoomId::parse(s).map_err(|_| {
        DecodeError::new(
            r,
            ErrorCode::BadRequest,
            "`room` must be 1..=64 bytes of [A-Za-z0-9_.-]",
        )
    })
}

/// A page's `limit` (`enter`, `history`): 0 or less is refused, above [`MAX_PAGE`] is treated
/// as [`MAX_PAGE`] (docs/protocol.md §3.2).
fn page_limit(r: Option<u32>, limit: Option<i64>) -> Result<usize, DecodeError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n <= 0 => Err(DecodeError::new(
            r,
            ErrorCode::BadRequest,
            "`limit` must be at least 1",
        )),
        Some(n) => Ok((n as u64).min(MAX_PAGE as u64) as usize),
    }
}

/// Checks a message text against the configured limit.
pub fn check_text(text: &str, max_text: usize) -> Result<(), (ErrorCode, &'static str)> {
    if text.len() > max_text {
        return Err((ErrorCode::TooLarge, "`text` is over the text limit"));
    }
    Ok(())
}

/// Checks a `cmid`: 1..=64 bytes.
pub fn check_cmid(cmid: &str) -> Result<(), (ErrorCode, &'static str)> {
    if cmid.is_empty() || cmid.len() > MAX_CMID {
        return Err((ErrorCode::BadRequest, "`cmid` must be 1..=64 bytes"));
    }
    Ok(())
}

/// Decodes and validates one client frame. `max_text` is the text limit in bytes.
pub fn decode_request(bytes: &[u8], max_text: usize) -> Result<Request, DecodeError> {
    if !is_map(bytes) {
        return Err(DecodeError::new(
            None,
            ErrorCode::BadFrame,
            "not a MessagePack map",
        ));
    }
    let raw: RawFrame<'_> = rmp_serde::from_slice(bytes).map_err(|_| classify(bytes))?;
    let r = raw.r;
    let Some(t) = raw.t else {
        return Err(DecodeError::new(
            r,
            ErrorCode::BadFrame,
            "the frame has no string `t`",
        ));
    };
    let bad = |message| DecodeError::new(r, ErrorCode::BadRequest, message);
    let checked = |res: Result<(), (ErrorCode, &'static str)>| {
        res.map_err(|(code, message)| DecodeError::new(r, code, message))
    };
    let request = match t {
        "ping" => Request::Ping,
        "sub" => Request::Sub {
            group: group_of(r, raw.group)?,
        },
        "unsub" => Request::Unsub {
            group: group_of(r, raw.group)?,
        },
        "enter" => Request::Enter {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
            since: raw.since,
            limit: page_limit(r, raw.limit)?,
        },
        "leave" => Request::Leave {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
        },
        "send" => {
            let group = group_of(r, raw.group)?;
            let room = room_of(r, raw.room)?;
            let kind = raw.kind.ok_or(bad("`kind` is required")).and_then(|k| {
                MessageKind::parse(k).ok_or(bad("`kind` must be text, image, video or file"))
            })?;
            let cmid = raw.cmid.ok_or(bad("`cmid` is required"))?;
            checked(check_cmid(cmid))?;
            if let Some(text) = raw.text {
                checked(check_text(text, max_text))?;
            }
            match kind {
                MessageKind::Text if raw.text.is_none_or(str::is_empty) => {
                    return Err(bad("`text` is required for text messages"));
                }
                MessageKind::Image | MessageKind::Video | MessageKind::File
                    if raw.media.is_none_or(str::is_empty) =>
                {
                    return Err(bad("`media` is required for this kind"));
                }
                _ => {}
            }
            let from = match raw.from {
                Some(from) => {
                    Some(UserId::parse(from).map_err(|_| bad("`from` is not a valid user"))?)
                }
                None => None,
            };
            Request::Send(SendRequest {
                group,
                room,
                kind,
                text: raw.text.map(str::to_owned),
                media: raw.media.map(str::to_owned),
                cmid: cmid.to_owned(),
                from,
            })
        }
        "read" => Request::Read {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
            id: raw.id.ok_or(bad("`id` is required"))?,
        },
        "history" => Request::History {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
            before: raw.before,
            limit: page_limit(r, raw.limit)?,
        },
        "typing" => Request::Typing {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
        },
        "edit" => {
            let text = raw.text.ok_or(bad("`text` is required"))?;
            if text.is_empty() {
                return Err(bad("`text` may not be empty"));
            }
            checked(check_text(text, max_text))?;
            Request::Edit {
                group: group_of(r, raw.group)?,
                room: room_of(r, raw.room)?,
                id: raw.id.ok_or(bad("`id` is required"))?,
                text: text.to_owned(),
            }
        }
        "delete" => Request::Delete {
            group: group_of(r, raw.group)?,
            room: room_of(r, raw.room)?,
            id: raw.id.ok_or(bad("`id` is required"))?,
        },
        _ => {
            return Err(DecodeError::new(
                r,
                ErrorCode::UnknownType,
                "unknown frame type",
            ));
        }
    };
    Ok(request)
}

/// Returns the `r` of a frame, for replies: also of one that does not decode, as long as the
/// entries up to its `r` can be read.
pub fn request_r(bytes: &[u8]) -> Option<u32> {
    #[derive(Default)]
    struct OnlyR {
        r: Option<u32>,
    }
    impl<'de> Deserialize<'de> for OnlyR {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct RVisitor;
            impl<'de> serde::de::Visitor<'de> for RVisitor {
                type Value = OnlyR;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    map: A,
                ) -> Result<OnlyR, A::Error> {
                    read_map(map, |out: &mut OnlyR, name, map| {
                        if name != "r" {
                            return Ok(false);
                        }
                        out.r = map.next_value()?;
                        Ok(true)
                    })
                }
            }
            deserializer.deserialize_map(RVisitor)
        }
    }
    match rmp_serde::from_slice::<OnlyR>(bytes) {
        Ok(frame) => frame.r,
        Err(_) => lenient_r(bytes),
    }
}

/// The `r` of a map read entry by entry up to the first that cannot be read (a cut-off
/// frame, a byte that is no MessagePack), so an `err` can still name the request.
fn lenient_r(bytes: &[u8]) -> Option<u32> {
    let mut cursor = bytes;
    let entries = rmp::decode::read_map_len(&mut cursor).ok()?;
    for _ in 0..entries {
        let key = rmpv::decode::read_value(&mut cursor).ok()?;
        let value = rmpv::decode::read_value(&mut cursor).ok()?;
        if key.as_str() == Some("r") {
            return value.as_u64().and_then(|r| u32::try_from(r).ok());
        }
    }
    None
}

/// Writes a text `msg` frame directly with `rmp`, byte for byte what the serde path writes
/// (a test checks it): this is the frame every delivery carries, so it skips serde's
/// per-field machinery. Frames with media take the serde path.
#[allow(clippy::too_many_arguments)]
fn encode_text_msg(
    group: &str,
    room: &str,
    id: u64,
    from: &str,
    kind: super::frame::MessageKind,
    text: Option<&str>,
    ts: i64,
    unread: u32,
    cmid: Option<&str>,
) -> Result<Bytes, std::io::Error> {
    use rmp::encode::{write_map_len, write_sint, write_str, write_uint};
    let mut out = Vec::with_capacity(
        96 + group.len()
            + room.len()
            + from.len()
            + text.map_or(0, str::len)
            + cmid.map_or(0, str::len),
    );
    let len = 8 + u32::from(text.is_some()) + u32::from(cmid.is_some());
    let w = &mut out;
    write_map_len(w, len)?;
    write_str(w, "t")?;
    write_str(w, "msg")?;
    write_str(w, "group")?;
    write_str(w, group)?;
    write_str(w, "room")?;
    write_str(w, room)?;
    write_str(w, "id")?;
    write_uint(w, id)?;
    write_str(w, "from")?;
    write_str(w, from)?;
    write_str(w, "kind")?;
    write_str(w, kind.as_str())?;
    if let Some(text) = text {
        write_str(w, "text")?;
        write_str(w, text)?;
    }
    write_str(w, "ts")?;
    write_sint(w, ts)?;
    write_str(w, "unread")?;
    write_uint(w, u64::from(unread))?;
    if let Some(cmid) = cmid {
        write_str(w, "cmid")?;
        write_str(w, cmid)?;
    }
    Ok(Bytes::from(out))
}

/// Encodes a server frame as a MessagePack map with string keys.
pub fn encode(frame: &ServerFrame<'_>) -> Bytes {
    if let ServerFrame::Msg {
        group,
        room,
        id,
        from,
        kind,
        text,
        media: None,
        ts,
        unread,
        cmid,
    } = frame
        && let Ok(bytes) =
            encode_text_msg(group, room, id.0, from, *kind, *text, *ts, *unread, *cmid)
    {
        return bytes;
    }
    let mut writer = BytesMut::with_capacity(256).writer();
    // Serialising our own frame types into memory cannot fail: every map has a known length
    // and every key is a string.
    if rmp_serde::encode::write_named(&mut writer, frame).is_err() {
        return encode_internal_error();
    }
    writer.into_inner().freeze()
}

fn encode_internal_error() -> Bytes {
    let frame = ServerFrame::Err {
        r: None,
        code: ErrorCode::Internal,
        message: "the server could not encode a frame",
    };
    Bytes::from(rmp_serde::to_vec_named(&frame).unwrap_or_default())
}

/// Encodes an `err` frame.
pub fn encode_err(r: Option<u32>, code: ErrorCode, message: &str) -> Bytes {
    encode(&ServerFrame::Err { r, code, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Id, MediaRef};
    use serde::Serialize;

    fn frame<T: Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(value).expect("encode")
    }

    #[derive(Serialize)]
    struct SendFrame<'a> {
        t: &'a str,
        r: u32,
        group: &'a str,
        room: &'a str,
        kind: &'a str,
        text: &'a str,
        cmid: &'a str,
        extra: u8,
    }

    #[test]
    fn decodes_a_send_and_ignores_unknown_keys() {
        let bytes = frame(&SendFrame {
            t: "send",
            r: 7,
            group: "g",
            room: "r",
            kind: "text",
            text: "hi",
            cmid: "c1",
            extra: 1,
        });
        let request = decode_request(&bytes, 16).expect("decodes");
        let Request::Send(send) = request else {
            panic!("not a send: {request:?}");
        };
        assert_eq!(send.text.as_deref(), Some("hi"));
        assert_eq!(send.cmid, "c1");
        assert_eq!(request_r(&bytes), Some(7));
    }

    #[test]
    fn classifies_errors() {
        let not_map = frame(&[1, 2, 3]);
        assert_eq!(
            decode_request(&not_map, 16).map_err(|e| e.code),
            Err(ErrorCode::BadFrame)
        );
        assert_eq!(
            decode_request(b"\x81\xa1x\x01", 16).map_err(|e| e.code),
            Err(ErrorCode::BadFrame)
        );
        #[derive(Serialize)]
        struct Wrong<'a> {
            t: &'a str,
            r: u32,
            group: u32,
        }
        let wrong = frame(&Wrong {
            t: "sub",
            r: 3,
            group: 5,
        });
        let err = decode_request(&wrong, 16).expect_err("wrong type");
        assert_eq!((err.code, err.r), (ErrorCode::BadRequest, Some(3)));
        #[derive(Serialize)]
        struct Unknown<'a> {
            t: &'a str,
        }
        let unknown = frame(&Unknown { t: "dance" });
        assert_eq!(
            decode_request(&unknown, 16).map_err(|e| e.code),
            Err(ErrorCode::UnknownType)
        );
        assert_eq!(
            decode_request(b"\xc1", 16).map_err(|e| e.code),
            Err(ErrorCode::BadFrame)
        );
        assert_eq!(
            decode_request(b"", 16).map_err(|e| e.code),
            Err(ErrorCode::BadFrame)
        );
    }

    #[test]
    fn enforces_text_and_limit_rules() {
        let long = SendFrame {
            t: "send",
            r: 1,
            group: "g",
            room: "r",
            kind: "text",
            text: "0123456789abcdefX",
            cmid: "c",
            extra: 0,
        };
        assert_eq!(
            decode_request(&frame(&long), 16).map_err(|e| e.code),
            Err(ErrorCode::TooLarge)
        );
        #[derive(Serialize)]
        struct History<'a> {
            t: &'a str,
            group: &'a str,
            room: &'a str,
            limit: i64,
        }
        let zero = frame(&History {
            t: "history",
            group: "g",
            room: "r",
            limit: 0,
        });
        assert_eq!(
            decode_request(&zero, 16).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        let big = frame(&History {
            t: "history",
            group: "g",
            room: "r",
            limit: 1000,
        });
        assert!(matches!(
            decode_request(&big, 16),
            Ok(Request::History { limit: 200, .. })
        ));
    }

    /// Keys that are not strings are unknown keys (PROTOCOL.md §3: string keys, unknown keys
    /// ignored), not the struct's fields by position as serde reads integer keys. Found by the
    /// fuzz target `frame`.
    #[test]
    fn integer_keys_are_ignored_not_read_as_fields() {
        // {0: "ping"}: no string `t`.
        assert_eq!(
            decode_request(b"\x81\x00\xa4ping", 16).map_err(|e| e.code),
            Err(ErrorCode::BadFrame)
        );
        // {"t": "ping", 1: 5}: key 1 is not `r`.
        let ping = b"\x82\xa1t\xa4ping\x01\x05";
        assert_eq!(decode_request(ping, 16), Ok(Request::Ping));
        assert_eq!(request_r(ping), None);
        // A send with an extra {9: "x"}: key 9 is not a second `text`.
        let mut send = frame(&SendFrame {
            t: "send",
            r: 4,
            group: "g",
            room: "r",
            kind: "text",
            text: "hi",
            cmid: "c1",
            extra: 0,
        });
        send[0] += 1;
        send.extend_from_slice(b"\x09\xa1x");
        let Ok(Request::Send(sent)) = decode_request(&send, 16) else {
            panic!("refused: {:?}", decode_request(&send, 16));
        };
        assert_eq!(sent.text.as_deref(), Some("hi"));
        assert_eq!(request_r(&send), Some(4));
        // An array is no frame, and has no `r` either.
        assert_eq!(request_r(b"\x91\x05"), None);
    }

    #[test]
    fn the_fast_msg_path_matches_serde_byte_for_byte() {
        for (text, cmid, ts, unread, id) in [
            (
                Some("hello"),
                Some("c-1"),
                1_795_313_340_969_i64,
                7_u32,
                382_714_054_050_840_576_u64,
            ),
            (None, None, 0, 0, 1),
            (Some(&*"가".repeat(100)), Some("x"), -5, 70_000, u64::MAX),
            (Some(&*"x".repeat(70_000)), None, i64::MAX, u32::MAX, 127),
        ] {
            let frame = ServerFrame::Msg {
                group: "g",
                room: "r",
                id: Id(id),
                from: "alice",
                kind: MessageKind::Text,
                text,
                media: None,
                ts,
                unread,
                cmid,
            };
            let fast = encode(&frame);
            let slow = rmp_serde::to_vec_named(&frame).expect("serde");
            assert_eq!(&fast[..], &slow[..]);
        }
    }

    #[test]
    fn encodes_maps_with_string_keys() {
        let media = MediaRef {
            id: "m".into(),
            content_type: "image/png".into(),
            size: 3,
            name: None,
            thumbnail: false,
        };
        let bytes = encode(&ServerFrame::Msg {
            group: "g",
            room: "r",
            id: Id(42),
            from: "u",
            kind: MessageKind::Image,
            text: None,
            media: Some(&media),
            ts: 1,
            unread: 2,
            cmid: Some("c"),
        });
        let value = rmpv::decode::read_value(&mut &bytes[..]).expect("valid msgpack");
        let map = value.as_map().expect("a map");
        assert_eq!(map[0].0.as_str(), Some("t"));
        assert_eq!(map[0].1.as_str(), Some("msg"));
        assert!(
            map.iter()
                .any(|(k, v)| k.as_str() == Some("id") && v.as_u64() == Some(42))
        );
        assert!(!map.iter().any(|(k, _)| k.as_str() == Some("text")));
    }
}
