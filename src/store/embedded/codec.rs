//! The embedded store's record format: a compact binary layout for the records on the hot paths
//! (messages, room activity, rooms, members, idempotency keys), written by hand.
//!
//! The store used to write every record as named MessagePack (`rmp_serde::to_vec_named`), which
//! spells out every field name and goes through serde on every read. The layout here is a few
//! fixed-width integers, a flag byte and length-prefixed strings, so encoding is one `Vec` of
//! the right size and decoding copies only the strings.
//!
//! Every record written here starts with [`MARKER`], `0xC1`, the one byte MessagePack never uses,
//! followed by a tag naming the record type. A record that does not start with it is an older
//! MessagePack one and is decoded with `rmp_serde`: data directories written before this format
//! keep working, and records are rewritten in the new layout as they change.
//!
//! Layouts (integers little endian; `str` is a LEB128 length and UTF-8 bytes):
//! - message: `C1 01`, id u64, seq u64, ts i64, flags u8 (1 deleted, 2 text, 4 media, 8 cmid,
//!   16 edited), kind u8, [edited i64], from str, [text str], [cmid str], [media]
//! - media reference: id str, type str, size u64, flags u8 (1 name, 2 thumbnail), [name str]
//! - activity: `C1 02`, members u32, has-last u8, [the last message, as a message record]
//! - room: `C1 03`, kind u8, flags u8 (1 max, 2 password), created i64, [max u32], group str,
//!   room str, title str, owner str, [password hash str]
//! - member: `C1 04`, cursor u64, cursor seq u64, joined i64, user str
//! - idempotency key: `C1 05`, id u64, ts i64

use serde::{Serialize, de::DeserializeOwned};

use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::{MediaRef, MessageKind};
use crate::store::{MemberRecord, RoomKind, RoomRecord, StoreError, StoreResult, StoredMessage};

/// The first byte of every record in this format (never the first byte of MessagePack).
pub const MARKER: u8 = 0xC1;
const TAG_MESSAGE: u8 = 1;
const TAG_ACTIVITY: u8 = 2;
const TAG_ROOM: u8 = 3;
const TAG_MEMBER: u8 = 4;
const TAG_IDEM: u8 = 5;

/// The byte offset of a message record's id (after the marker and the tag).
const MESSAGE_ID_AT: usize = 2;

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record tag {0}")]
    Tag(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("unknown room kind {0}")]
    RoomKind(u8),
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("an id is invalid: {0}")]
    Id(#[from] crate::ids::IdError),
    #[error("legacy record: {0}")]
    Legacy(#[from] rmp_serde::decode::Error),
    #[error("{0} bytes left over")]
    Trailing(usize),
}

impl From<CodecError> for StoreError {
    fn from(e: CodecError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

type CodecResult<T> = Result<T, CodecError>;

/// A value stored in one of the store's keyspaces.
pub trait Value: Sized {
    fn encode(&self) -> StoreResult<Vec<u8>>;
    fn decode(bytes: &[u8]) -> StoreResult<Self>;
}

/// The records still written as named MessagePack (rarely written, never on a hot path).
macro_rules! msgpack_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn encode(&self) -> StoreResult<Vec<u8>> {
                msgpack_encode(self)
            }
            fn decode(bytes: &[u8]) -> StoreResult<Self> {
                msgpack_decode(bytes)
            }
        }
    )*};
}

msgpack_value!(
    crate::store::MediaRecord,
    crate::store::DeviceRecord,
    i64,
    ()
);

fn msgpack_encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn msgpack_decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Whether `bytes` is a record of this format with `tag` (else it is legacy MessagePack).
fn tagged(bytes: &[u8], tag: u8) -> CodecResult<bool> {
    match bytes {
        [MARKER, t, ..] if *t == tag => Ok(true),
        [MARKER, t, ..] => Err(CodecError::Tag(*t)),
        [MARKER] => Err(CodecError::Truncated),
        _ => Ok(false),
    }
}

// ---- writing ----

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push(((len & 0x7f) as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// An upper bound of a string's encoded size.
fn str_size(s: &str) -> usize {
    s.len() + 5
}

fn kind_byte(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::Text => 0,
        MessageKind::Image => 1,
        MessageKind::Video => 2,
        MessageKind::File => 3,
    }
}

fn room_kind_byte(kind: RoomKind) -> u8 {
    match kind {
        RoomKind::Group => 0,
        RoomKind::Direct => 1,
        RoomKind::Open => 2,
    }
}

/// Encodes a message record.
pub fn encode_message(msg: &StoredMessage) -> Vec<u8> {
    let size = 2
        + 8 * 4
        + 2
        + str_size(msg.from.as_str())
        + msg.text.as_deref().map_or(0, str_size)
        + msg.cmid.as_deref().map_or(0, str_size)
        + msg.media.as_ref().map_or(0, |m| {
            str_size(&m.id) + str_size(&m.content_type) + 9 + m.name.as_deref().map_or(0, str_size)
        });
    let mut out = Vec::with_capacity(size);
    write_message(&mut out, msg);
    out
}

/// Appends a message record to `out`.
pub fn write_message(out: &mut Vec<u8>, msg: &StoredMessage) {
    out.push(MARKER);
    out.push(TAG_MESSAGE);
    put_u64(out, msg.id);
    put_u64(out, msg.seq);
    put_i64(out, msg.ts);
    let flags = u8::from(msg.deleted)
        | (u8::from(msg.text.is_some()) << 1)
        | (u8::from(msg.media.is_some()) << 2)
        | (u8::from(msg.cmid.is_some()) << 3)
        | (u8::from(msg.edited.is_some()) << 4);
    out.push(flags);
    out.push(kind_byte(msg.kind));
    if let Some(edited) = msg.edited {
        put_i64(out, edited);
    }
    put_str(out, msg.from.as_str());
    if let Some(text) = &msg.text {
        put_str(out, text);
    }
    if let Some(cmid) = &msg.cmid {
        put_str(out, cmid);
    }
    if let Some(media) = &msg.media {
        put_str(out, &media.id);
        put_str(out, &media.content_type);
        put_u64(out, media.size);
        out.push(u8::from(media.name.is_some()) | (u8::from(media.thumbnail) << 1));
        if let Some(name) = &media.name {
            put_str(out, name);
        }
    }
}

/// Encodes a room's activity: its member count and its last message, already encoded (a
/// message record, in this format or the legacy one).
pub fn encode_activity(members: u32, last: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + last.map_or(0, <[u8]>::len));
    out.push(MARKER);
    out.push(TAG_ACTIVITY);
    out.extend_from_slice(&members.to_le_bytes());
    match last {
        Some(last) => {
            out.push(1);
            out.extend_from_slice(last);
        }
        None => out.push(0),
    }
    out
}

// ---- reading ----

/// Reads a record front to back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> CodecResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> CodecResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> CodecResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> CodecResult<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> CodecResult<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> CodecResult<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn len(&mut self) -> CodecResult<usize> {
        let mut len = 0usize;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(len);
            }
        }
        Err(CodecError::Truncated)
    }

    fn str(&mut self) -> CodecResult<&'a str> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| CodecError::Utf8)
    }

    fn string(&mut self) -> CodecResult<String> {
        self.str().map(str::to_owned)
    }

    fn end(&self) -> CodecResult<()> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Reuses the ids decoded last, so that a page of messages from a few senders allocates each
/// sender's id once (ids are reference counted).
#[derive(Default)]
pub struct Ids {
    user: Option<UserId>,
    group: Option<GroupId>,
}

impl Ids {
    /// Starts with a group id that records are expected to carry.
    pub fn with_group(group: &GroupId) -> Self {
        Self {
            user: None,
            group: Some(group.clone()),
        }
    }

    fn user(&mut self, s: &str) -> CodecResult<UserId> {
        if let Some(user) = self.user.as_ref().filter(|u| u.as_str() == s) {
            return Ok(user.clone());
        }
        let user = UserId::parse(s)?;
        self.user = Some(user.clone());
        Ok(user)
    }

    fn group(&mut self, s: &str) -> CodecResult<GroupId> {
        if let Some(group) = self.group.as_ref().filter(|g| g.as_str() == s) {
            return Ok(group.clone());
        }
        let group = GroupId::parse(s)?;
        self.group = Some(group.clone());
        Ok(group)
    }

    /// Decodes a message record (either format).
    pub fn message(&mut self, bytes: &[u8]) -> StoreResult<StoredMessage> {
        if !tagged(bytes, TAG_MESSAGE)? {
            return msgpack_decode(bytes);
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let msg = self.read_message(&mut r)?;
        r.end()?;
        Ok(msg)
    }

    fn read_message(&mut self, r: &mut Reader<'_>) -> CodecResult<StoredMessage> {
        let id = r.u64()?;
        let seq = r.u64()?;
        let ts = r.i64()?;
        let flags = r.u8()?;
        let kind = match r.u8()? {
            0 => MessageKind::Text,
            1 => MessageKind::Image,
            2 => MessageKind::Video,
            3 => MessageKind::File,
            k => return Err(CodecError::Kind(k)),
        };
        let edited = if flags & 16 != 0 {
            Some(r.i64()?)
        } else {
            None
        };
        let from = self.user(r.str()?)?;
        let text = if flags & 2 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let cmid = if flags & 8 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let media = if flags & 4 != 0 {
            let id = r.string()?;
            let content_type = r.string()?;
            let size = r.u64()?;
            let media_flags = r.u8()?;
            let name = if media_flags & 1 != 0 {
                Some(r.string()?)
            } else {
                None
            };
            Some(MediaRef {
                id,
                content_type,
                size,
                name,
                thumbnail: media_flags & 2 != 0,
            })
        } else {
            None
        };
        Ok(StoredMessage {
            id,
            seq,
            from,
            kind,
            text,
            media,
            ts,
            cmid,
            edited,
            deleted: flags & 1 != 0,
        })
    }

    /// Decodes a room record (either format).
    pub fn room(&mut self, bytes: &[u8]) -> StoreResult<RoomRecord> {
        if !tagged(bytes, TAG_ROOM)? {
            return msgpack_decode(bytes);
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let kind = match r.u8()? {
            0 => RoomKind::Group,
            1 => RoomKind::Direct,
            2 => RoomKind::Open,
            k => return Err(CodecError::RoomKind(k).into()),
        };
        let flags = r.u8()?;
        let created = r.i64()?;
        let max = if flags & 1 != 0 { Some(r.u32()?) } else { None };
        let group = self.group(r.str()?)?;
        let room = RoomId::parse(r.str()?).map_err(CodecError::from)?;
        let title = r.string()?;
        let owner = self.user(r.str()?)?;
        let password_hash = if flags & 2 != 0 {
            Some(r.string()?)
        } else {
            None
        };
        r.end()?;
        Ok(RoomRecord {
            group,
            room,
            title,
            kind,
            owner,
            max,
            password_hash,
            created,
        })
    }

    /// Decodes a member record (either format).
    pub fn member(&mut self, bytes: &[u8]) -> StoreResult<MemberRecord> {
        if !tagged(bytes, TAG_MEMBER)? {
            return msgpack_decode(bytes);
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let cursor = r.u64()?;
        let cursor_seq = r.u64()?;
        let joined = r.i64()?;
        let user = self.user(r.str()?)?;
        r.end()?;
        Ok(MemberRecord {
            user,
            cursor,
            cursor_seq,
            joined,
        })
    }

    /// Decodes a room's activity (either format).
    pub fn activity(&mut self, bytes: &[u8]) -> StoreResult<Activity> {
        if !tagged(bytes, TAG_ACTIVITY)? {
            return msgpack_decode(bytes);
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let members = r.u32()?;
        let last = match r.u8()? {
            0 => {
                r.end()?;
                None
            }
            _ => Some(self.message(r.bytes)?),
        };
        Ok(Activity { members, last })
    }
}

/// A room's activity: its member count and last message, kept for the chat list.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    pub members: u32,
    pub last: Option<StoredMessage>,
}

/// A room's activity as the writer keeps it: the last message stays encoded.
#[derive(Debug, Clone, Default)]
pub struct RawActivity {
    pub members: u32,
    /// The id of the last message and its record.
    pub last: Option<(MessageId, Vec<u8>)>,
}

impl RawActivity {
    /// Decodes a stored activity record (either format) without decoding its last message
    /// when it is in this format.
    pub fn decode(bytes: &[u8]) -> StoreResult<Self> {
        if !tagged(bytes, TAG_ACTIVITY)? {
            let legacy: Activity = msgpack_decode(bytes)?;
            return Ok(Self {
                members: legacy.members,
                last: legacy.last.map(|m| (m.id, encode_message(&m))),
            });
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let members = r.u32()?;
        let last = match r.u8()? {
            0 => {
                r.end()?;
                None
            }
            _ => Some((message_id(r.bytes)?, r.bytes.to_vec())),
        };
        Ok(Self { members, last })
    }
}

/// The id of an encoded message, read without decoding the rest.
pub fn message_id(bytes: &[u8]) -> StoreResult<MessageId> {
    if !tagged(bytes, TAG_MESSAGE)? {
        return Ok(Ids::default().message(bytes)?.id);
    }
    let mut r = Reader {
        bytes: &bytes[MESSAGE_ID_AT..],
    };
    Ok(r.u64()?)
}

impl Value for StoredMessage {
    fn encode(&self) -> StoreResult<Vec<u8>> {
        Ok(encode_message(self))
    }
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        Ids::default().message(bytes)
    }
}

impl Value for RoomRecord {
    fn encode(&self) -> StoreResult<Vec<u8>> {
        let mut out = Vec::with_capacity(
            2 + 2
                + 8
                + 4
                + str_size(self.group.as_str())
                + str_size(self.room.as_str())
                + str_size(&self.title)
                + str_size(self.owner.as_str())
                + self.password_hash.as_deref().map_or(0, str_size),
        );
        out.push(MARKER);
        out.push(TAG_ROOM);
        out.push(room_kind_byte(self.kind));
        out.push(u8::from(self.max.is_some()) | (u8::from(self.password_hash.is_some()) << 1));
        put_i64(&mut out, self.created);
        if let Some(max) = self.max {
            out.extend_from_slice(&max.to_le_bytes());
        }
        put_str(&mut out, self.group.as_str());
        put_str(&mut out, self.room.as_str());
        put_str(&mut out, &self.title);
        put_str(&mut out, self.owner.as_str());
        if let Some(hash) = &self.password_hash {
            put_str(&mut out, hash);
        }
        Ok(out)
    }
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        Ids::default().room(bytes)
    }
}

impl Value for MemberRecord {
    fn encode(&self) -> StoreResult<Vec<u8>> {
        let mut out = Vec::with_capacity(2 + 24 + str_size(self.user.as_str()));
        out.push(MARKER);
        out.push(TAG_MEMBER);
        put_u64(&mut out, self.cursor);
        put_u64(&mut out, self.cursor_seq);
        put_i64(&mut out, self.joined);
        put_str(&mut out, self.user.as_str());
        Ok(out)
    }
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        Ids::default().member(bytes)
    }
}

/// An idempotency key's value: the message it produced and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdemEntry {
    pub id: MessageId,
    pub ts: i64,
}

impl IdemEntry {
    /// The record, without allocating.
    pub fn to_bytes(self) -> [u8; 18] {
        let mut out = [0; 18];
        out[0] = MARKER;
        out[1] = TAG_IDEM;
        out[2..10].copy_from_slice(&self.id.to_le_bytes());
        out[10..].copy_from_slice(&self.ts.to_le_bytes());
        out
    }
}

impl Value for IdemEntry {
    fn encode(&self) -> StoreResult<Vec<u8>> {
        Ok(self.to_bytes().to_vec())
    }
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        if !tagged(bytes, TAG_IDEM)? {
            return msgpack_decode(bytes);
        }
        let mut r = Reader { bytes: &bytes[2..] };
        let entry = IdemEntry {
            id: r.u64()?,
            ts: r.i64()?,
        };
        r.end()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(media: bool) -> StoredMessage {
        StoredMessage {
            id: 0x0102_0304_0506_0708,
            seq: 42,
            from: UserId::parse("álice").expect("id"),
            kind: if media {
                MessageKind::Image
            } else {
                MessageKind::Text
            },
            text: Some("x".repeat(300)),
            media: media.then(|| MediaRef {
                id: "0123456789abcdef0123456789abcdef".into(),
                content_type: "image/png".into(),
                size: 12_345,
                name: Some("cat.png".into()),
                thumbnail: true,
            }),
            ts: 1_700_000_000_000,
            cmid: Some("c-1".into()),
            edited: media.then_some(1_700_000_000_500),
            deleted: media,
        }
    }

    #[test]
    fn messages_round_trip_in_both_formats() {
        for media in [false, true] {
            let msg = message(media);
            let bytes = encode_message(&msg);
            assert_eq!(bytes[0], MARKER);
            assert_eq!(StoredMessage::decode(&bytes).expect("new"), msg);
            assert_eq!(message_id(&bytes).expect("id"), msg.id);
            let legacy = rmp_serde::to_vec_named(&msg).expect("legacy");
            assert_eq!(StoredMessage::decode(&legacy).expect("legacy"), msg);
            assert_eq!(message_id(&legacy).expect("id"), msg.id);
        }
        let bare = StoredMessage {
            text: None,
            cmid: None,
            ..message(false)
        };
        assert_eq!(
            StoredMessage::decode(&encode_message(&bare)).expect("bare"),
            bare
        );
    }

    #[test]
    fn rooms_members_and_keys_round_trip_in_both_formats() {
        let room = RoomRecord {
            group: GroupId::parse("g").expect("id"),
            room: RoomId::parse("r").expect("id"),
            title: "Title".into(),
            kind: RoomKind::Direct,
            owner: UserId::parse("bob").expect("id"),
            max: Some(7),
            password_hash: Some("$argon2id$...".into()),
            created: -5,
        };
        for r in [
            room.clone(),
            RoomRecord {
                max: None,
                password_hash: None,
                kind: RoomKind::Open,
                ..room.clone()
            },
        ] {
            assert_eq!(
                RoomRecord::decode(&r.encode().expect("enc")).expect("dec"),
                r
            );
            let legacy = rmp_serde::to_vec_named(&r).expect("legacy");
            assert_eq!(RoomRecord::decode(&legacy).expect("legacy"), r);
        }
        let member = MemberRecord {
            user: UserId::parse("carol").expect("id"),
            cursor: 9,
            cursor_seq: 3,
            joined: 11,
        };
        assert_eq!(
            MemberRecord::decode(&member.encode().expect("enc")).expect("dec"),
            member
        );
        let legacy = rmp_serde::to_vec_named(&member).expect("legacy");
        assert_eq!(MemberRecord::decode(&legacy).expect("legacy"), member);
        let idem = IdemEntry { id: 5, ts: 6 };
        assert_eq!(
            IdemEntry::decode(&idem.encode().expect("enc")).expect("dec"),
            idem
        );
        let legacy = rmp_serde::to_vec_named(&idem).expect("legacy");
        assert_eq!(IdemEntry::decode(&legacy).expect("legacy"), idem);
    }

    #[test]
    fn activity_round_trips_in_both_formats() {
        let msg = message(false);
        let bytes = encode_activity(3, Some(&encode_message(&msg)));
        let activity = Ids::default().activity(&bytes).expect("new");
        assert_eq!((activity.members, activity.last), (3, Some(msg.clone())));
        let raw = RawActivity::decode(&bytes).expect("raw");
        assert_eq!(raw.members, 3);
        assert_eq!(raw.last.map(|(id, _)| id), Some(msg.id));
        let legacy = rmp_serde::to_vec_named(&Activity {
            members: 2,
            last: Some(msg.clone()),
        })
        .expect("legacy");
        let raw = RawActivity::decode(&legacy).expect("raw legacy");
        let (id, last) = raw.last.expect("last");
        assert_eq!((raw.members, id), (2, msg.id));
        assert_eq!(StoredMessage::decode(&last).expect("re-encoded"), msg);
        let empty = Ids::default()
            .activity(&encode_activity(0, None))
            .expect("empty");
        assert_eq!((empty.members, empty.last), (0, None));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = encode_message(&message(true));
        for cut in 0..bytes.len() {
            let _ = StoredMessage::decode(&bytes[..cut]);
            let _ = RawActivity::decode(&encode_activity(1, Some(&bytes[..cut])));
        }
        assert!(StoredMessage::decode(&[MARKER, 9, 0]).is_err());
        assert!(StoredMessage::decode(&[MARKER]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(StoredMessage::decode(&long).is_err());
        // A length that runs past the end, and one that never ends.
        assert!(Ids::default().member(&[MARKER, TAG_MEMBER]).is_err());
        let mut endless = vec![MARKER, TAG_MEMBER];
        endless.extend_from_slice(&[0; 24]);
        endless.extend_from_slice(&[0xff; 8]);
        assert!(Ids::default().member(&endless).is_err());
    }
}
