//! Row mapping: the store's records to the values bound to statements, and selected rows back
//! to records. Pure functions, so every mapping is tested without a cluster.
//!
//! Rows are matched to structs by column name (the driver's default), so a select list in
//! another order still maps correctly; the tests check each select list against the struct.

use ::scylla::{DeserializeRow, SerializeRow};

use super::buckets::bucket_of;
use crate::ids::{GroupId, MessageId, RoomId, UserId};
use crate::protocol::{MediaRef, MessageKind};
use crate::store::{
    MediaRecord, MemberRecord, RoomKind, RoomRecord, StoreError, StoreResult, StoredMessage,
};

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// A u64 (id, seq, cursor) as a bigint. Snowflakes have 63 significant bits, so only a value
/// that could never be an id is refused.
pub fn to_bigint(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| corrupt(what, format!("{value} exceeds the bigint range")))
}

/// A bound for queries: ids above `i64::MAX` do not exist, so the largest bigint stands in.
pub fn clamp_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_bigint(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("{value} is negative")))
}

pub fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Group => "group",
        RoomKind::Direct => "direct",
        RoomKind::Open => "open",
    }
}

pub fn parse_kind(name: &str) -> Option<RoomKind> {
    match name {
        "group" => Some(RoomKind::Group),
        "direct" => Some(RoomKind::Direct),
        "open" => Some(RoomKind::Open),
        _ => None,
    }
}

fn encode_media(media: &MediaRef) -> StoreResult<Vec<u8>> {
    rmp_serde::to_vec_named(media).map_err(|e| corrupt("media", e))
}

fn decode_media(bytes: &[u8]) -> StoreResult<MediaRef> {
    rmp_serde::from_slice(bytes).map_err(|e| corrupt("media", e))
}

/// The values of `INSERT_ROOM`.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow)]
pub struct RoomValues<'a> {
    pub group_id: &'a str,
    pub room_id: &'a str,
    pub title: &'a str,
    pub kind: &'static str,
    pub owner: &'a str,
    pub max_members: Option<i64>,
    pub password_hash: Option<&'a str>,
    pub created: i64,
    pub member_count: i64,
}

impl<'a> RoomValues<'a> {
    pub fn new(record: &'a RoomRecord, member_count: usize) -> Self {
        Self {
            group_id: record.group.as_str(),
            room_id: record.room.as_str(),
            title: &record.title,
            kind: kind_name(record.kind),
            owner: record.owner.as_str(),
            max_members: record.max.map(i64::from),
            password_hash: record.password_hash.as_deref(),
            created: record.created,
            member_count: i64::try_from(member_count).unwrap_or(i64::MAX),
        }
    }
}

/// A row of `SELECT_ROOM`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct RoomRow {
    pub title: Option<String>,
    pub kind: Option<String>,
    pub owner: Option<String>,
    pub max_members: Option<i64>,
    pub password_hash: Option<String>,
    pub created: Option<i64>,
    pub member_count: Option<i64>,
}

impl RoomRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "title",
        "kind",
        "owner",
        "max_members",
        "password_hash",
        "created",
        "member_count",
    ];

    /// The record and its member count. A row without a kind or owner is not a room.
    pub fn into_record(
        self,
        group: &GroupId,
        room: &RoomId,
    ) -> StoreResult<Option<(RoomRecord, u32)>> {
        let (Some(kind), Some(owner)) = (self.kind, self.owner) else {
            return Ok(None);
        };
        let kind = parse_kind(&kind).ok_or_else(|| corrupt("room kind", &kind))?;
        let owner = UserId::parse(&owner).map_err(|e| corrupt("room owner", e))?;
        let max = self
            .max_members
            .map(|m| u32::try_from(m).map_err(|_| corrupt("room max", m)))
            .transpose()?;
        let members = self
            .member_count
            .map_or(0, |c| u32::try_from(c.max(0)).unwrap_or(u32::MAX));
        let record = RoomRecord {
            group: group.clone(),
            room: room.clone(),
            title: self.title.unwrap_or_default(),
            kind,
            owner,
            max,
            password_hash: self.password_hash,
            created: self.created.unwrap_or(0),
        };
        Ok(Some((record, members)))
    }
}

/// The values of `UPSERT_MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow)]
pub struct MemberValues<'a> {
    pub group_id: &'a str,
    pub room_id: &'a str,
    pub user_id: &'a str,
    pub cursor_id: i64,
    pub cursor_seq: i64,
    pub joined: i64,
}

impl<'a> MemberValues<'a> {
    pub fn new(
        group: &'a GroupId,
        room: &'a RoomId,
        member: &'a MemberRecord,
    ) -> StoreResult<Self> {
        Ok(Self {
            group_id: group.as_str(),
            room_id: room.as_str(),
            user_id: member.user.as_str(),
            cursor_id: to_bigint(member.cursor, "cursor")?,
            cursor_seq: to_bigint(member.cursor_seq, "cursor seq")?,
            joined: member.joined,
        })
    }
}

/// A row of `SELECT_MEMBERS`, `SELECT_MEMBER` and `SELECT_MEMBERS_IN`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MemberRow {
    pub user_id: String,
    pub cursor_id: Option<i64>,
    pub cursor_seq: Option<i64>,
    pub joined: Option<i64>,
}

impl MemberRow {
    pub const COLUMNS: &'static [&'static str] = &["user_id", "cursor_id", "cursor_seq", "joined"];

    /// The member, or `None` for a row without `joined`: the remains of a cursor write that
    /// raced the member's removal.
    pub fn into_record(self) -> StoreResult<Option<MemberRecord>> {
        let Some(joined) = self.joined else {
            return Ok(None);
        };
        Ok(Some(MemberRecord {
            user: UserId::parse(&self.user_id).map_err(|e| corrupt("member", e))?,
            cursor: from_bigint(self.cursor_id.unwrap_or(0), "cursor")?,
            cursor_seq: from_bigint(self.cursor_seq.unwrap_or(0), "cursor seq")?,
            joined,
        }))
    }
}

/// The values of `INSERT_MESSAGE` (appends and tombstones).
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow)]
pub struct MessageValues<'a> {
    pub group_id: &'a str,
    pub room_id: &'a str,
    pub bucket: i64,
    pub id: i64,
    pub seq: i64,
    pub sender: &'a str,
    pub kind: &'static str,
    pub body: Option<&'a str>,
    pub media: Option<Vec<u8>>,
    pub ts: i64,
    pub cmid: Option<&'a str>,
    pub edited: Option<i64>,
    pub deleted: bool,
}

impl<'a> MessageValues<'a> {
    pub const COLUMNS: &'static [&'static str] = &[
        "group_id", "room_id", "bucket", "id", "seq", "sender", "kind", "body", "media", "ts",
        "cmid", "edited", "deleted",
    ];

    pub fn new(group: &'a GroupId, room: &'a RoomId, msg: &'a StoredMessage) -> StoreResult<Self> {
        // A tombstone keeps no text or media, whatever the caller left in it.
        let (body, media) = if msg.deleted {
            (None, None)
        } else {
            (
                msg.text.as_deref(),
                msg.media.as_ref().map(encode_media).transpose()?,
            )
        };
        Ok(Self {
            group_id: group.as_str(),
            room_id: room.as_str(),
            bucket: bucket_of(msg.id),
            id: to_bigint(msg.id, "message id")?,
            seq: to_bigint(msg.seq, "message seq")?,
            sender: msg.from.as_str(),
            kind: msg.kind.as_str(),
            body,
            media,
            ts: msg.ts,
            cmid: msg.cmid.as_deref(),
            edited: msg.edited,
            deleted: msg.deleted,
        })
    }
}

/// The values of `EDIT_MESSAGE`: every column but `deleted`.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow)]
pub struct EditValues<'a> {
    pub group_id: &'a str,
    pub room_id: &'a str,
    pub bucket: i64,
    pub id: i64,
    pub seq: i64,
    pub sender: &'a str,
    pub kind: &'static str,
    pub body: Option<&'a str>,
    pub media: Option<Vec<u8>>,
    pub ts: i64,
    pub cmid: Option<&'a str>,
    pub edited: Option<i64>,
}

impl<'a> EditValues<'a> {
    pub fn new(group: &'a GroupId, room: &'a RoomId, msg: &'a StoredMessage) -> StoreResult<Self> {
        let all = MessageValues::new(group, room, msg)?;
        Ok(Self {
            group_id: all.group_id,
            room_id: all.room_id,
            bucket: all.bucket,
            id: all.id,
            seq: all.seq,
            sender: all.sender,
            kind: all.kind,
            body: all.body,
            media: all.media,
            ts: all.ts,
            cmid: all.cmid,
            edited: all.edited,
        })
    }
}

/// A row of the message selects.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MessageRow {
    pub id: i64,
    pub seq: Option<i64>,
    pub sender: Option<String>,
    pub kind: Option<String>,
    pub body: Option<String>,
    pub media: Option<Vec<u8>>,
    pub ts: Option<i64>,
    pub cmid: Option<String>,
    pub edited: Option<i64>,
    pub deleted: Option<bool>,
}

impl MessageRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "id", "seq", "sender", "kind", "body", "media", "ts", "cmid", "edited", "deleted",
    ];

    /// The message. Deletion wins: a deleted row is read without text or media, even if an edit
    /// that raced the delete wrote some after it.
    pub fn into_message(self) -> StoreResult<StoredMessage> {
        let deleted = self.deleted.unwrap_or(false);
        let sender = self.sender.ok_or_else(|| corrupt("message", "no sender"))?;
        let kind = self.kind.ok_or_else(|| corrupt("message", "no kind"))?;
        let (text, media) = if deleted {
            (None, None)
        } else {
            (
                self.body,
                self.media.as_deref().map(decode_media).transpose()?,
            )
        };
        Ok(StoredMessage {
            id: from_bigint(self.id, "message id")?,
            seq: from_bigint(self.seq.unwrap_or(0), "message seq")?,
            from: UserId::parse(&sender).map_err(|e| corrupt("message sender", e))?,
            kind: MessageKind::parse(&kind).ok_or_else(|| corrupt("message kind", &kind))?,
            text,
            media,
            ts: self.ts.unwrap_or(0),
            cmid: self.cmid,
            edited: self.edited,
            deleted,
        })
    }
}

/// The values of `INSERT_MEDIA`.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow)]
pub struct MediaValues<'a> {
    pub media_id: &'a str,
    pub group_id: &'a str,
    pub room_id: &'a str,
    pub uploader: &'a str,
    pub content_type: &'a str,
    pub size: i64,
    pub file_name: Option<&'a str>,
    pub created: i64,
    pub has_thumbnail: bool,
}

impl<'a> MediaValues<'a> {
    pub fn new(media: &'a MediaRecord) -> StoreResult<Self> {
        Ok(Self {
            media_id: &media.id,
            group_id: media.group.as_str(),
            room_id: media.room.as_str(),
            uploader: media.uploader.as_str(),
            content_type: &media.content_type,
            size: to_bigint(media.size, "media size")?,
            file_name: media.name.as_deref(),
            created: media.created,
            has_thumbnail: media.has_thumbnail,
        })
    }
}

/// A row of `SELECT_MEDIA`.
#[derive(Debug, Clone, PartialEq, Eq, DeserializeRow)]
pub struct MediaRow {
    pub media_id: String,
    pub group_id: Option<String>,
    pub room_id: Option<String>,
    pub uploader: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<i64>,
    pub file_name: Option<String>,
    pub created: Option<i64>,
    pub has_thumbnail: Option<bool>,
}

impl MediaRow {
    pub const COLUMNS: &'static [&'static str] = &[
        "media_id",
        "group_id",
        "room_id",
        "uploader",
        "content_type",
        "size",
        "file_name",
        "created",
        "has_thumbnail",
    ];

    /// The record, or `None` for a row without its room (the remains of a thumbnail update
    /// that raced the deletion).
    pub fn into_record(self) -> StoreResult<Option<MediaRecord>> {
        let (Some(group), Some(room), Some(uploader)) =
            (self.group_id, self.room_id, self.uploader)
        else {
            return Ok(None);
        };
        Ok(Some(MediaRecord {
            id: self.media_id,
            group: GroupId::parse(&group).map_err(|e| corrupt("media group", e))?,
            room: RoomId::parse(&room).map_err(|e| corrupt("media room", e))?,
            uploader: UserId::parse(&uploader).map_err(|e| corrupt("media uploader", e))?,
            content_type: self
                .content_type
                .ok_or_else(|| corrupt("media", "no content type"))?,
            size: from_bigint(self.size.unwrap_or(0), "media size")?,
            name: self.file_name,
            created: self.created.unwrap_or(0),
            has_thumbnail: self.has_thumbnail.unwrap_or(false),
        }))
    }
}

/// The id bound to a claim: the id of the message that holds the key.
pub fn claim_id(id: MessageId) -> StoreResult<i64> {
    to_bigint(id, "message id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scylla::schema;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap_or_else(|_| unreachable!())
    }

    fn group() -> GroupId {
        GroupId::parse("g").unwrap_or_else(|_| unreachable!())
    }

    fn room() -> RoomId {
        RoomId::parse("r").unwrap_or_else(|_| unreachable!())
    }

    fn message() -> StoredMessage {
        StoredMessage {
            id: (3 << 44) + 17,
            seq: 42,
            from: user("김철수"),
            kind: MessageKind::Image,
            text: Some("look".into()),
            media: Some(MediaRef {
                id: "m1".into(),
                content_type: "image/png".into(),
                size: 1234,
                name: Some("cat.png".into()),
                thumbnail: true,
            }),
            ts: 1_750_000_000_000,
            cmid: Some("c-9".into()),
            edited: Some(1_750_000_000_500),
            deleted: false,
        }
    }

    /// What a select would give back for `values` (the columns a message row stores).
    fn row_of(values: &MessageValues<'_>) -> MessageRow {
        MessageRow {
            id: values.id,
            seq: Some(values.seq),
            sender: Some(values.sender.to_owned()),
            kind: Some(values.kind.to_owned()),
            body: values.body.map(str::to_owned),
            media: values.media.clone(),
            ts: Some(values.ts),
            cmid: values.cmid.map(str::to_owned),
            edited: values.edited,
            deleted: Some(values.deleted),
        }
    }

    #[test]
    fn a_message_round_trips() {
        let (g, r, msg) = (group(), room(), message());
        let values = MessageValues::new(&g, &r, &msg).expect("values");
        assert_eq!(values.bucket, 3);
        assert_eq!(values.id, ((3i64) << 44) + 17);
        assert_eq!(values.kind, "image");
        assert_eq!(values.sender, "김철수");
        assert_eq!(row_of(&values).into_message().expect("row"), msg);
        let plain = StoredMessage {
            media: None,
            edited: None,
            cmid: None,
            kind: MessageKind::Text,
            ..msg
        };
        let values = MessageValues::new(&g, &r, &plain).expect("values");
        assert_eq!(values.media, None);
        assert_eq!(row_of(&values).into_message().expect("row"), plain);
    }

    #[test]
    fn an_edit_writes_everything_but_the_deleted_flag() {
        let (g, r, msg) = (group(), room(), message());
        let edit = EditValues::new(&g, &r, &msg).expect("values");
        let all = MessageValues::new(&g, &r, &msg).expect("values");
        assert_eq!(
            (edit.id, edit.bucket, edit.body, &edit.media),
            (all.id, all.bucket, all.body, &all.media)
        );
        let words: Vec<&str> = schema::EDIT_MESSAGE
            .cql
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .collect();
        assert!(!words.contains(&"deleted"));
    }

    #[test]
    fn deletion_wins_when_reading() {
        let (g, r, msg) = (group(), room(), message());
        let tomb = StoredMessage {
            text: None,
            media: None,
            deleted: true,
            ..msg.clone()
        };
        let values = MessageValues::new(&g, &r, &tomb).expect("values");
        assert!(values.deleted && values.body.is_none() && values.media.is_none());
        // An edit that raced the delete left its text in the row: it is not read back.
        let mut row = row_of(&MessageValues::new(&g, &r, &msg).expect("values"));
        row.deleted = Some(true);
        assert_eq!(row.into_message().expect("row"), tomb);
        // A tombstone written with text keeps none.
        let careless = StoredMessage {
            deleted: true,
            ..msg
        };
        let values = MessageValues::new(&g, &r, &careless).expect("values");
        assert!(values.body.is_none() && values.media.is_none());
    }

    #[test]
    fn bad_message_rows_are_corrupt_not_panics() {
        let (g, r, msg) = (group(), room(), message());
        let good = row_of(&MessageValues::new(&g, &r, &msg).expect("values"));
        let cases = [
            MessageRow {
                kind: Some("poem".into()),
                ..good.clone()
            },
            MessageRow {
                kind: None,
                ..good.clone()
            },
            MessageRow {
                sender: None,
                ..good.clone()
            },
            MessageRow {
                sender: Some(String::new()),
                ..good.clone()
            },
            MessageRow {
                id: -1,
                ..good.clone()
            },
            MessageRow {
                media: Some(vec![0xc1]),
                ..good.clone()
            },
        ];
        for row in cases {
            assert!(matches!(row.into_message(), Err(StoreError::Corrupt(_))));
        }
        let too_big = StoredMessage {
            id: u64::MAX,
            ..msg
        };
        assert!(matches!(
            MessageValues::new(&g, &r, &too_big),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_room_round_trips() {
        let record = RoomRecord {
            group: group(),
            room: room(),
            title: "Ops".into(),
            kind: RoomKind::Direct,
            owner: user("alice"),
            max: Some(50),
            password_hash: Some("$argon2id$v=19$...".into()),
            created: 1_700_000_000_000,
        };
        let values = RoomValues::new(&record, 2);
        assert_eq!(
            (values.kind, values.max_members, values.member_count),
            ("direct", Some(50), 2)
        );
        let row = RoomRow {
            title: Some(values.title.to_owned()),
            kind: Some(values.kind.to_owned()),
            owner: Some(values.owner.to_owned()),
            max_members: values.max_members,
            password_hash: values.password_hash.map(str::to_owned),
            created: Some(values.created),
            member_count: Some(values.member_count),
        };
        let (back, count) = row
            .clone()
            .into_record(&group(), &room())
            .expect("row")
            .expect("room");
        assert_eq!((back, count), (record, 2));
        for kind in [RoomKind::Group, RoomKind::Direct, RoomKind::Open] {
            assert_eq!(parse_kind(kind_name(kind)), Some(kind));
        }
        // A row the conditional insert never completed (no kind, no owner) is no room.
        let partial = RoomRow {
            kind: None,
            owner: None,
            ..row.clone()
        };
        assert_eq!(partial.into_record(&group(), &room()).expect("row"), None);
        let bad = RoomRow {
            max_members: Some(-1),
            ..row.clone()
        };
        assert!(bad.into_record(&group(), &room()).is_err());
        let bad = RoomRow {
            kind: Some("hall".into()),
            ..row
        };
        assert!(bad.into_record(&group(), &room()).is_err());
    }

    #[test]
    fn members_round_trip_and_remains_are_skipped() {
        let (g, r) = (group(), room());
        let member = MemberRecord {
            user: user("bob"),
            cursor: 77,
            cursor_seq: 3,
            joined: 5,
        };
        let values = MemberValues::new(&g, &r, &member).expect("values");
        let row = MemberRow {
            user_id: values.user_id.to_owned(),
            cursor_id: Some(values.cursor_id),
            cursor_seq: Some(values.cursor_seq),
            joined: Some(values.joined),
        };
        assert_eq!(row.clone().into_record().expect("row"), Some(member));
        let remains = MemberRow {
            joined: None,
            ..row.clone()
        };
        assert_eq!(remains.into_record().expect("row"), None);
        let fresh = MemberRow {
            cursor_id: None,
            cursor_seq: None,
            ..row
        };
        let got = fresh.into_record().expect("row").expect("member");
        assert_eq!((got.cursor, got.cursor_seq), (0, 0));
    }

    /// The names between `SELECT` and `FROM`, or in an insert's column list.
    fn listed_columns(cql: &str) -> Vec<String> {
        let upper = cql.to_ascii_uppercase();
        let list = if let Some(rest) = upper.strip_prefix("SELECT ") {
            let end = rest.find(" FROM ").unwrap_or(rest.len());
            &cql[7..7 + end]
        } else {
            let start = cql.find('(').map_or(0, |i| i + 1);
            let end = cql.find(')').unwrap_or(cql.len());
            &cql[start..end]
        };
        list.split(',').map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn select_lists_match_the_row_structs() {
        for stmt in [
            &schema::SELECT_MESSAGE,
            &schema::SELECT_MESSAGES_BELOW,
            &schema::SELECT_MESSAGES_AT_MOST,
            &schema::SELECT_MESSAGES_ABOVE,
        ] {
            assert_eq!(
                listed_columns(stmt.cql),
                MessageRow::COLUMNS,
                "{}",
                stmt.cql
            );
        }
        for stmt in [
            &schema::SELECT_MEMBERS,
            &schema::SELECT_MEMBER,
            &schema::SELECT_MEMBERS_IN,
        ] {
            assert_eq!(listed_columns(stmt.cql), MemberRow::COLUMNS, "{}", stmt.cql);
        }
        assert_eq!(listed_columns(schema::SELECT_ROOM.cql), RoomRow::COLUMNS);
        assert_eq!(listed_columns(schema::SELECT_MEDIA.cql), MediaRow::COLUMNS);
        assert_eq!(listed_columns(schema::INSERT_MEDIA.cql), MediaRow::COLUMNS);
        assert_eq!(
            listed_columns(schema::INSERT_MESSAGE.cql),
            MessageValues::COLUMNS
        );
        let room_insert = listed_columns(schema::INSERT_ROOM.cql);
        assert_eq!(&room_insert[..2], ["group_id", "room_id"]);
        assert_eq!(&room_insert[2..], RoomRow::COLUMNS);
        let member_insert = listed_columns(schema::UPSERT_MEMBER.cql);
        assert_eq!(&member_insert[..2], ["group_id", "room_id"]);
        assert_eq!(&member_insert[2..], MemberRow::COLUMNS);
    }

    #[test]
    fn a_media_record_round_trips() {
        let media = MediaRecord {
            id: "0123456789abcdef0123456789abcdef".into(),
            group: group(),
            room: room(),
            uploader: user("alice"),
            content_type: "image/png".into(),
            size: 4096,
            name: Some("cat.png".into()),
            created: 1_750_000_000_000,
            has_thumbnail: true,
        };
        let v = MediaValues::new(&media).expect("values");
        let row = MediaRow {
            media_id: v.media_id.to_owned(),
            group_id: Some(v.group_id.to_owned()),
            room_id: Some(v.room_id.to_owned()),
            uploader: Some(v.uploader.to_owned()),
            content_type: Some(v.content_type.to_owned()),
            size: Some(v.size),
            file_name: v.file_name.map(str::to_owned),
            created: Some(v.created),
            has_thumbnail: Some(v.has_thumbnail),
        };
        assert_eq!(row.clone().into_record().expect("row"), Some(media));
        let remains = MediaRow {
            group_id: None,
            ..row.clone()
        };
        assert_eq!(remains.into_record().expect("row"), None);
        let bad = MediaRow {
            size: Some(-5),
            ..row
        };
        assert!(bad.into_record().is_err());
    }

    #[test]
    fn bigint_conversions() {
        assert_eq!(to_bigint(5, "x").expect("fits"), 5);
        assert!(to_bigint(u64::MAX, "x").is_err());
        assert_eq!(clamp_bigint(u64::MAX), i64::MAX);
        assert_eq!(clamp_bigint(9), 9);
        assert!(from_bigint(-1, "x").is_err());
    }
}
