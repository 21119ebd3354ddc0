//! The embedded store: fjall (an LSM tree, like ScyllaDB) in the node's data directory.
//!
//! All writes go through one writer thread that performs **group commit**: it takes every write
//! waiting in its queue, applies them as one atomic batch, syncs the journal to disk once, and
//! only then answers each caller. One fsync thus covers hundreds of messages. Because there is
//! a single writer, read-then-write rules (idempotency keys, create-if-absent, member counts)
//! are atomic without locks. Reads run on tokio's blocking pool.
//!
//! What keeps a write cheap: a batch keeps the last value of every key it writes in an overlay
//! (per table, looked up without allocating), a room's activity record is read at most once per
//! batch, kept decoded while the batch runs and written once at its end (its last message is
//! taken from the batch, not copied per message), and records are written in the compact
//! layout of the `codec` module instead of named MessagePack (older records are still read).
//! [`Store::append_messages`] hands the writer many messages of a room as one write. A batch
//! goes into fjall in key order (a room's new messages then land side by side in the memtable),
//! and memtables are large (`MEMTABLE_BYTES`), so flushes and compactions are rare. A new
//! `cmid` is not looked up in fjall when the writer's Bloom filter of the stored idempotency
//! keys (`idem_filter`, rebuilt at start and at every hourly sweep) says it cannot be there.
//!
//! Keyspaces and keys (`\0` separates parts; group and room ids cannot contain it, user ids may
//! not contain control characters):
//! - `rooms`: `group\0room` → [`RoomRecord`]
//! - `members`: `group\0room\0user` → [`MemberRecord`]
//! - `user_rooms`: `user\0group\0room` → [`RoomRecord`] (a copy, for the chat list)
//! - `room_numbers`: `group\0room` → the room's number (8 bytes), given with its first message;
//!   `\0next` → the next number to give
//! - `room_messages`: the room's number, spread ([`RoomNo::prefix`]), + id (8 bytes, big
//!   endian) → [`StoredMessage`]. Sixteen bytes, which fjall keeps inline: comparing two keys
//!   in the memtable costs the same however long the names (the named layout, with both names
//!   in every key, cost a fifth of the append rate with UUID names; `migrate` moves it)
//! - `activity`: `group\0room` → `codec::Activity` (member count and last message)
//! - `room_idem`: the room's number, spread, + `user\0cmid` → `codec::IdemEntry`
//! - `media`: media id → [`MediaRecord`]
//! - `room_media`: `group\0room\0` + media id → nothing (a room's media, for deleting the room)
//! - `devices`: `user\0token` → [`DeviceRecord`] (push devices)
//! - `mutes`: `group\0room\0user` → the time it was muted (a muted room sends that user no push)

mod codec;
mod health;
mod idem_filter;
mod migrate;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};
use tokio::sync::{Semaphore, oneshot};

use self::codec::{
    Activity, IdemEntry, Ids, RawActivity, Value, encode_activity, encode_message, write_message,
};
use self::health::{Failed, Shared};
use self::idem_filter::IdemFilter;
use super::{
    AppendOutcome, ChatListEntry, CreateOutcome, DeviceRecord, IDEMPOTENCY_WINDOW_MS, LoadedRoom,
    MediaRecord, MemberRecord, Page, RoomRecord, Store, StoreError, StoreResult, StoredMessage,
};
use crate::ids::{GroupId, MessageId, RoomId, UserId, now_ms};

/// The writer's maps hash keys it has just built (foldhash: fast, and the keys are ours).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How many writes (messages, for a batch of appends) may wait for the writer at once before
/// callers wait for room.
const MAX_QUEUED_WRITES: usize = 65_536;
/// The most writes (messages, for a batch of appends) applied in one batch (one fsync).
const MAX_BATCH: usize = 8_192;
/// Memtable size per keyspace, set when a keyspace is created (fjall keeps it with the
/// keyspace; stores created before keep fjall's default of 64 MiB). Larger memtables mean fewer
/// flushes and fewer L0 tables to compact: every flush of `room_messages` overlaps all rooms'
/// key ranges, so each compaction rewrites much of level 1. At 128 MiB the batched append bench
/// ran 25 % faster than at 64 MiB, and 8 MiB was a third slower (docs/benchmarks.md). The
/// price is memory: a busy keyspace holds up to this much (plus one sealed memtable while it
/// is flushed), and a restart replays up to that much journal.
const MEMTABLE_BYTES: u64 = 128 * 1024 * 1024;
/// Most room numbers the writer keeps in memory (each a room key and 8 bytes).
const MAX_CACHED_NUMBERS: usize = 100_000;
/// How often expired idempotency keys are swept away.
const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

fn io_err(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Io(io) => StoreError::Unavailable(format!("disk: {io}")),
        fjall::Error::Poisoned => StoreError::Unavailable(
            "the database refuses writes after a failed write; it is being reopened".into(),
        ),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part);
    }
    out
}

fn room_key(group: &GroupId, room: &RoomId) -> Vec<u8> {
    key(&[group.as_str().as_bytes(), room.as_str().as_bytes()])
}

/// `group\0room\0`: the prefix of a room's members, messages and idempotency keys.
fn room_prefix(group: &GroupId, room: &RoomId) -> Vec<u8> {
    let mut k = room_key(group, room);
    k.push(0);
    k
}

fn member_key(group: &GroupId, room: &RoomId, user: &UserId) -> Vec<u8> {
    key(&[
        group.as_str().as_bytes(),
        room.as_str().as_bytes(),
        user.as_str().as_bytes(),
    ])
}

fn user_room_key(user: &UserId, group: &GroupId, room: &RoomId) -> Vec<u8> {
    key(&[
        user.as_str().as_bytes(),
        group.as_str().as_bytes(),
        room.as_str().as_bytes(),
    ])
}

/// The number a room's messages and idempotency keys are filed under (see the module's list
/// of keyspaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoomNo(u64);

impl RoomNo {
    /// Spreads consecutive numbers over the whole key space (an odd multiplier is a bijection
    /// of `u64`), so two rooms' keys already differ in the first bytes fjall compares.
    const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The first 8 bytes of every key of the room in `room_messages` and `room_idem`.
    fn prefix(self) -> [u8; 8] {
        self.0.wrapping_mul(Self::SPREAD).to_be_bytes()
    }

    fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> StoreResult<Self> {
        let raw: [u8; 8] = bytes
            .try_into()
            .map_err(|_| StoreError::Corrupt("a room number is not 8 bytes".into()))?;
        Ok(Self(u64::from_be_bytes(raw)))
    }
}

/// `room_numbers` key of the next number to give (a room key never starts with `\0`).
const NEXT_ROOM_NO: &[u8] = b"\0next";

/// A message's key: its room's number, then its id (16 bytes, which fjall keeps inline).
fn message_key(room: RoomNo, id: MessageId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&room.prefix());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// `group\0room\0id`: a room's media, in `room_media`.
fn room_media_key(group: &GroupId, room: &RoomId, id: &str) -> Vec<u8> {
    let mut k = room_prefix(group, room);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `user\0token`: one of a user's push devices. FCM tokens hold no `\0`.
fn device_key(user: &UserId, token: &str) -> Vec<u8> {
    key(&[user.as_str().as_bytes(), token.as_bytes()])
}

/// `user\0`: the prefix of a user's devices.
fn devices_prefix(user: &UserId) -> Vec<u8> {
    let mut k = user.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

/// An idempotency key: the room's number, then `user\0cmid`.
fn idem_key(room: RoomNo, user: &UserId, cmid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + user.as_str().len() + 1 + cmid.len());
    k.extend_from_slice(&room.prefix());
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(cmid.as_bytes());
    k
}

/// The open keyspaces, cheap to clone into blocking tasks.
#[derive(Clone)]
struct Tables {
    db: Database,
    rooms: Keyspace,
    members: Keyspace,
    user_rooms: Keyspace,
    messages: Keyspace,
    activity: Keyspace,
    idem: Keyspace,
    media: Keyspace,
    room_media: Keyspace,
    devices: Keyspace,
    mutes: Keyspace,
    numbers: Keyspace,
}

/// The keyspaces a batch writes through its overlay (room activity has its own slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Rooms,
    Members,
    UserRooms,
    Messages,
    Idem,
    Media,
    RoomMedia,
    Devices,
    Mutes,
    Numbers,
}

const TABLES: [Table; 10] = [
    Table::Rooms,
    Table::Members,
    Table::UserRooms,
    Table::Messages,
    Table::Idem,
    Table::Media,
    Table::RoomMedia,
    Table::Devices,
    Table::Mutes,
    Table::Numbers,
];

impl Tables {
    fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::builder(path)
            .cache_size(64 * 1024 * 1024)
            .open()
            .map_err(io_err)?;
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(io_err)
        };
        let tables = Self {
            rooms: open("rooms")?,
            members: open("members")?,
            user_rooms: open("user_rooms")?,
            messages: open("room_messages")?,
            activity: open("activity")?,
            idem: open("room_idem")?,
            media: open("media")?,
            room_media: open("room_media")?,
            devices: open("devices")?,
            mutes: open("mutes")?,
            numbers: open("room_numbers")?,
            db,
        };
        migrate::named_keys(&tables)?;
        Ok(tables)
    }

    /// The number a room's messages are filed under; `None` before its first message.
    fn number(&self, room_key: &[u8]) -> StoreResult<Option<RoomNo>> {
        match self.numbers.get(room_key).map_err(io_err)? {
            Some(bytes) => RoomNo::from_bytes(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn table(&self, table: Table) -> &Keyspace {
        match table {
            Table::Rooms => &self.rooms,
            Table::Members => &self.members,
            Table::UserRooms => &self.user_rooms,
            Table::Messages => &self.messages,
            Table::Idem => &self.idem,
            Table::Media => &self.media,
            Table::RoomMedia => &self.room_media,
            Table::Devices => &self.devices,
            Table::Mutes => &self.mutes,
            Table::Numbers => &self.numbers,
        }
    }

    fn get<T: Value>(&self, table: Table, key: &[u8]) -> StoreResult<Option<T>> {
        match self.table(table).get(key).map_err(io_err)? {
            Some(bytes) => T::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan<T: Value>(&self, table: Table, prefix: &[u8]) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for guard in self.table(table).prefix(prefix) {
            let (_, value) = guard.into_inner().map_err(io_err)?;
            out.push(T::decode(&value)?);
        }
        Ok(out)
    }

    /// The newest `limit` messages with id < `before` of the room whose key is `room_key`,
    /// oldest first, and whether older ones remain.
    fn messages_before(
        &self,
        room_key: &[u8],
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page> {
        let Some(room) = self.number(room_key)? else {
            return Ok(Page::default());
        };
        let start = message_key(room, 0);
        // Snowflakes never reach `u64::MAX`, so an exclusive end there misses nothing.
        let end = message_key(room, before.unwrap_or(u64::MAX));
        let mut msgs = Vec::with_capacity(limit.min(256));
        let mut more = false;
        let mut ids = Ids::default();
        for guard in self.messages.range(start..end).rev() {
            if msgs.len() == limit {
                more = true;
                break;
            }
            let (_, value) = guard.into_inner().map_err(io_err)?;
            msgs.push(ids.message(&value)?);
        }
        msgs.reverse();
        Ok(Page { msgs, more })
    }

    fn messages_after(&self, room_key: &[u8], since: MessageId, limit: usize) -> StoreResult<Page> {
        let Some(start_id) = since.checked_add(1) else {
            return Ok(Page {
                msgs: Vec::new(),
                more: false,
            });
        };
        let Some(room) = self.number(room_key)? else {
            return Ok(Page::default());
        };
        let start = message_key(room, start_id);
        let end = message_key(room, u64::MAX);
        let mut msgs = Vec::with_capacity(limit.min(256));
        let mut more = false;
        let mut ids = Ids::default();
        for guard in self.messages.range(start..=end) {
            if msgs.len() == limit {
                more = true;
                break;
            }
            let (_, value) = guard.into_inner().map_err(io_err)?;
            msgs.push(ids.message(&value)?);
        }
        Ok(Page { msgs, more })
    }

    /// A user's chat list in a group: one prefix scan of `user_rooms`, then per room one read
    /// of its activity and one of the user's member record (for the unread count).
    fn chat_list(&self, user: &UserId, group: &GroupId) -> StoreResult<Vec<ChatListEntry>> {
        let mut prefix = key(&[user.as_str().as_bytes(), group.as_str().as_bytes()]);
        prefix.push(0);
        let mut ids = Ids::with_group(group);
        let mut out = Vec::new();
        // Reused for every room: `group\0room`, then `group\0room\0user`.
        let mut k = Vec::with_capacity(group.as_str().len() + 2 * 64 + 2);
        for guard in self.user_rooms.prefix(&prefix) {
            let (_, value) = guard.into_inner().map_err(io_err)?;
            let record = ids.room(&value)?;
            k.clear();
            k.extend_from_slice(group.as_str().as_bytes());
            k.push(0);
            k.extend_from_slice(record.room.as_str().as_bytes());
            let activity = match self.activity.get(&k).map_err(io_err)? {
                Some(bytes) => ids.activity(&bytes)?,
                None => Activity::default(),
            };
            k.push(0);
            k.extend_from_slice(user.as_str().as_bytes());
            let cursor_seq = match self.members.get(&k).map_err(io_err)? {
                Some(bytes) => Some(ids.member(&bytes)?.cursor_seq),
                None => None,
            };
            let last_seq = activity.last.as_ref().map_or(0, |m| m.seq);
            let unread = cursor_seq.map_or(0, |c| last_seq.saturating_sub(c));
            out.push(ChatListEntry {
                record,
                members: activity.members,
                last: activity.last,
                unread,
            });
        }
        // Sort small (time, index) pairs rather than the entries themselves (a few hundred
        // bytes each), then move every entry once. Ties keep the order of the scan.
        let mut order: Vec<(std::cmp::Reverse<i64>, usize)> = out
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let ts = e.last.as_ref().map_or(e.record.created, |m| m.ts);
                (std::cmp::Reverse(ts), i)
            })
            .collect();
        order.sort_unstable();
        let mut slots: Vec<Option<ChatListEntry>> = out.into_iter().map(Some).collect();
        Ok(order
            .into_iter()
            .filter_map(|(_, i)| slots.get_mut(i).and_then(Option::take))
            .collect())
    }
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A write waiting for the writer thread.
enum WriteOp {
    CreateRoom {
        record: RoomRecord,
        members: Vec<MemberRecord>,
        done: Reply<CreateOutcome>,
    },
    DeleteRoom {
        group: GroupId,
        room: RoomId,
        done: Reply<()>,
    },
    PutMember {
        group: GroupId,
        room: RoomId,
        member: MemberRecord,
        done: Reply<()>,
    },
    RemoveMember {
        group: GroupId,
        room: RoomId,
        user: UserId,
        done: Reply<()>,
    },
    SaveCursors {
        group: GroupId,
        room: RoomId,
        cursors: Vec<(UserId, MessageId, u64)>,
        done: Reply<()>,
    },
    /// One or more messages of one room, applied in order and answered together.
    Append {
        group: GroupId,
        room: RoomId,
        msgs: Vec<StoredMessage>,
        done: Reply<Vec<AppendOutcome>>,
    },
    Update {
        group: GroupId,
        room: RoomId,
        msg: StoredMessage,
        done: Reply<()>,
    },
    PutMedia {
        media: MediaRecord,
        done: Reply<()>,
    },
    MarkThumbnail {
        id: String,
        done: Reply<bool>,
    },
    DeleteMedia {
        id: String,
        done: Reply<()>,
    },
    PutDevice {
        user: UserId,
        device: DeviceRecord,
        done: Reply<()>,
    },
    DeleteDevice {
        user: UserId,
        token: String,
        done: Reply<()>,
    },
    SetMuted {
        group: GroupId,
        room: RoomId,
        user: UserId,
        muted: bool,
        done: Reply<()>,
    },
}

impl WriteOp {
    /// Answers the write with `err` without applying it (the store refuses writes).
    fn refuse(self, err: StoreError) {
        match self {
            Self::CreateRoom { done, .. } => {
                let _ = done.send(Err(err));
            }
            Self::Append { done, .. } => {
                let _ = done.send(Err(err));
            }
            Self::MarkThumbnail { done, .. } => {
                let _ = done.send(Err(err));
            }
            Self::DeleteRoom { done, .. }
            | Self::PutMember { done, .. }
            | Self::RemoveMember { done, .. }
            | Self::SaveCursors { done, .. }
            | Self::Update { done, .. }
            | Self::PutMedia { done, .. }
            | Self::DeleteMedia { done, .. }
            | Self::PutDevice { done, .. }
            | Self::DeleteDevice { done, .. }
            | Self::SetMuted { done, .. } => {
                let _ = done.send(Err(err));
            }
        }
    }

    /// How much of a batch this write takes: its number of messages, or one.
    fn weight(&self) -> usize {
        match self {
            Self::Append { msgs, .. } => msgs.len().max(1),
            _ => 1,
        }
    }
}

/// A room's activity within a batch: as read (or written) so far, and whether it changed.
struct ActivitySlot {
    /// `None`: the room has no activity record (or it is being deleted).
    state: Option<RawActivity>,
    dirty: bool,
}

/// A batch being built: the last value of every key it writes (`None` is a deletion), which
/// later writes in the batch also read. Only the last value of a key is committed, so a room's
/// activity rewritten for every message of a batch is written to disk once. The writer thread
/// keeps one batch and reuses its maps, so their memory is allocated once.
struct Batch<'t> {
    tables: &'t Tables,
    /// One map per [`Table`], in the order of [`TABLES`]. Keys and values are fjall's own
    /// byte slices, handed to the commit without another copy.
    overlay: [HashMap<Slice, Option<Slice>>; TABLES.len()],
    /// Room key → the room's activity, read once per batch and kept decoded.
    activity: HashMap<Vec<u8>, ActivitySlot>,
    /// Room key → its number, as committed or given in this batch. Kept across batches (the
    /// writer reuses its batch): only the writer gives or takes numbers.
    numbers: HashMap<Vec<u8>, RoomNo>,
    /// Numbers given in this batch (forgotten again if it fails).
    given: Vec<Vec<u8>>,
    /// The next number to give, once read (from `room_numbers`, which holds it as committed).
    next_number: Option<u64>,
    /// When the batch began (for the idempotency window).
    now: i64,
    /// Which idempotency keys `room_idem` may hold (kept across batches, like `numbers`; the
    /// writer builds it at start and rebuilds it at each sweep).
    idem: IdemFilter,
    /// `cmid`s of this batch the filter ruled out, and those looked up in fjall (counted in
    /// `chatnode_store_idem_lookups_total` after the batch).
    idem_skipped: u64,
    idem_looked_up: u64,
}

impl<'t> Batch<'t> {
    fn new(tables: &'t Tables) -> Self {
        Self {
            tables,
            overlay: Default::default(),
            activity: HashMap::default(),
            numbers: HashMap::default(),
            given: Vec::new(),
            next_number: None,
            now: now_ms(),
            idem: IdemFilter::unknown(),
            idem_skipped: 0,
            idem_looked_up: 0,
        }
    }

    /// The number the room whose key is `room_key` files its messages under. A room without
    /// one gets the next number when `give` is set (its first message); otherwise `None`.
    fn number(&mut self, room_key: &[u8], give: bool) -> StoreResult<Option<RoomNo>> {
        if let Some(number) = self.numbers.get(room_key) {
            return Ok(Some(*number));
        }
        let found = match self.map(Table::Numbers).get(room_key) {
            Some(Some(bytes)) => Some(RoomNo::from_bytes(bytes)?),
            // Taken back in this batch (the room was deleted).
            Some(None) => None,
            None => self.tables.number(room_key)?,
        };
        if let Some(number) = found {
            self.numbers.insert(room_key.to_vec(), number);
            return Ok(Some(number));
        }
        if !give {
            return Ok(None);
        }
        let next = match self.next_number {
            Some(next) => next,
            None => match self.tables.numbers.get(NEXT_ROOM_NO).map_err(io_err)? {
                Some(bytes) => RoomNo::from_bytes(&bytes)?.0,
                None => 1,
            },
        };
        let number = RoomNo(next);
        self.next_number = Some(next + 1);
        self.put_slices(Table::Numbers, room_key, &number.to_bytes());
        self.put_slices(Table::Numbers, NEXT_ROOM_NO, &RoomNo(next + 1).to_bytes());
        self.numbers.insert(room_key.to_vec(), number);
        self.given.push(room_key.to_vec());
        Ok(Some(number))
    }

    /// Takes a deleted room's number back (its keys are deleted with it).
    fn forget_number(&mut self, room_key: &[u8]) {
        self.numbers.remove(room_key);
        self.map_mut(Table::Numbers)
            .insert(Slice::new(room_key), None);
    }

    fn map(&self, table: Table) -> &HashMap<Slice, Option<Slice>> {
        &self.overlay[table as usize]
    }

    fn map_mut(&mut self, table: Table) -> &mut HashMap<Slice, Option<Slice>> {
        &mut self.overlay[table as usize]
    }

    fn get<T: Value>(&self, table: Table, key: &[u8]) -> StoreResult<Option<T>> {
        match self.map(table).get(key) {
            Some(Some(bytes)) => T::decode(bytes).map(Some),
            Some(None) => Ok(None),
            None => self.tables.get(table, key),
        }
    }

    fn put<T: Value>(&mut self, table: Table, key: Vec<u8>, value: &T) -> StoreResult<()> {
        let bytes = value.encode()?;
        self.put_raw(table, key, bytes);
        Ok(())
    }

    fn put_raw(&mut self, table: Table, key: Vec<u8>, bytes: Vec<u8>) {
        self.map_mut(table)
            .insert(Slice::from(key), Some(Slice::from(bytes)));
    }

    /// Writes a key and value built in scratch buffers (one copy each, none for short keys).
    fn put_slices(&mut self, table: Table, key: &[u8], bytes: &[u8]) {
        self.map_mut(table)
            .insert(Slice::new(key), Some(Slice::new(bytes)));
    }

    fn remove(&mut self, table: Table, key: Vec<u8>) {
        self.map_mut(table).insert(Slice::from(key), None);
    }

    /// The keys of `table` under `prefix`, on disk or written by this batch (deleted or not).
    fn keys_with_prefix(&self, table: Table, prefix: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = self
            .tables
            .table(table)
            .prefix(prefix)
            .map(|g| g.key().map(|k| k.to_vec()).map_err(io_err))
            .collect::<StoreResult<_>>()?;
        keys.extend(
            self.map(table)
                .keys()
                .filter(|k| k.starts_with(prefix))
                .map(|k| k.to_vec()),
        );
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// The activity of the room whose key is `room_key`, read from disk on first use.
    fn activity(&mut self, room_key: &[u8]) -> StoreResult<&mut ActivitySlot> {
        if !self.activity.contains_key(room_key) {
            let state = match self.tables.activity.get(room_key).map_err(io_err)? {
                Some(bytes) => Some(RawActivity::decode(&bytes)?),
                None => None,
            };
            self.activity.insert(
                room_key.to_vec(),
                ActivitySlot {
                    state,
                    dirty: false,
                },
            );
        }
        self.activity
            .get_mut(room_key)
            .ok_or_else(|| StoreError::Corrupt("activity slot missing".into()))
    }

    /// Changes a room's member count.
    fn add_members(&mut self, room_key: &[u8], delta: i64) -> StoreResult<()> {
        let slot = self.activity(room_key)?;
        let state = slot.state.get_or_insert_with(RawActivity::default);
        let members = (i64::from(state.members) + delta).clamp(0, i64::from(u32::MAX));
        state.members = u32::try_from(members).unwrap_or(u32::MAX);
        slot.dirty = true;
        Ok(())
    }

    /// How many entries the batch would write.
    fn len(&self) -> usize {
        self.overlay.iter().map(HashMap::len).sum::<usize>()
            + self.activity.values().filter(|s| s.dirty).count()
    }

    /// Commits the batch and syncs the journal: after this returns `Ok`, it is durable. The
    /// batch is empty afterwards either way, ready for the next one.
    fn commit(&mut self) -> StoreResult<()> {
        self.commit_numbered(None)
    }

    /// Commits the batch as [`Batch::commit`] does; with `number`, the batch also records
    /// itself as the writer's last durable batch (`health::LAST_BATCH`), so that the outcome
    /// of a failed commit can be read after reopening.
    fn commit_numbered(&mut self, number: Option<u64>) -> StoreResult<()> {
        if self.len() == 0 {
            self.activity.clear();
            return Ok(());
        }
        let mut batch = self
            .tables
            .db
            .batch()
            .durability(Some(PersistMode::SyncAll));
        let messages = &self.overlay[Table::Messages as usize];
        for (rk, slot) in self.activity.drain() {
            if !slot.dirty {
                continue;
            }
            let Some(state) = slot.state else {
                batch.remove(&self.tables.activity, rk);
                continue;
            };
            // The last message as this batch leaves it (appended or edited here), else as read.
            let number = self.numbers.get(&rk).copied();
            let last = state.last.as_ref().and_then(|(id, read)| {
                let written = number.and_then(|n| messages.get(message_key(n, *id).as_slice()));
                match written {
                    Some(Some(bytes)) => Some(bytes.as_slice()),
                    _ => (!read.is_empty()).then_some(read.as_slice()),
                }
            });
            let value = encode_activity(state.members, last);
            batch.insert(&self.tables.activity, rk, value);
        }
        for (table, map) in TABLES.iter().zip(self.overlay.iter_mut()) {
            let keyspace = self.tables.table(*table);
            // In key order: consecutive inserts then land next to each other in the memtable's
            // skiplist (a room's new messages are neighbours), which keeps its search paths
            // in cache.
            let mut writes: Vec<_> = map.drain().collect();
            writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in writes {
                match value {
                    Some(value) => batch.insert(keyspace, key, value),
                    None => batch.remove(keyspace, key),
                }
            }
        }
        if let Some(number) = number {
            batch.insert(
                &self.tables.numbers,
                health::LAST_BATCH,
                number.to_be_bytes(),
            );
        }
        batch.commit().map_err(io_err)?;
        self.given.clear();
        if self.numbers.len() > MAX_CACHED_NUMBERS {
            // Read again from `room_numbers` as rooms come back.
            self.numbers.clear();
        }
        Ok(())
    }

    /// Forgets everything written since the last commit (after a failed commit), numbers
    /// given included.
    fn clear(&mut self) {
        self.activity.clear();
        for map in &mut self.overlay {
            map.clear();
        }
        for room_key in self.given.drain(..) {
            self.numbers.remove(&room_key);
        }
        // Read again: `room_numbers` holds the next number as the last commit left it.
        self.next_number = None;
    }
}

/// Answers queued after a batch commits.
enum Done {
    Create(Reply<CreateOutcome>, CreateOutcome),
    Unit(Reply<()>),
    Append(Reply<Vec<AppendOutcome>>, Vec<AppendOutcome>),
    Bool(Reply<bool>, bool),
}

impl Done {
    fn finish(self, result: &StoreResult<()>) {
        let err = || match result {
            Err(e) => StoreError::Unavailable(e.reason()),
            Ok(()) => StoreError::Closed,
        };
        match self {
            Self::Create(tx, outcome) => {
                let _ = tx.send(result.as_ref().map(|_| outcome).map_err(|_| err()));
            }
            Self::Unit(tx) => {
                let _ = tx.send(result.as_ref().map(|_| ()).map_err(|_| err()));
            }
            Self::Append(tx, outcome) => {
                let _ = tx.send(result.as_ref().map(|_| outcome).map_err(|_| err()));
            }
            Self::Bool(tx, value) => {
                let _ = tx.send(result.as_ref().map(|_| value).map_err(|_| err()));
            }
        }
    }
}

/// Queues the answer to a write once the batch commits, or answers an error at once.
fn answer<T>(
    done: &mut Vec<Done>,
    tx: Reply<T>,
    result: StoreResult<T>,
    wrap: fn(Reply<T>, T) -> Done,
) {
    match result {
        Ok(value) => done.push(wrap(tx, value)),
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    }
}

/// Applies appends of one room in order. Every read comes first and nothing is written until
/// all succeeded, so a failed append leaves nothing of itself in the batch.
fn append(
    batch: &mut Batch<'_>,
    group: &GroupId,
    room: &RoomId,
    msgs: Vec<StoredMessage>,
) -> StoreResult<Vec<AppendOutcome>> {
    let rk = room_key(group, room);
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    // The room's first message gives it its number. (Should a read below fail, the number
    // stays given: it files nothing yet and is never given twice.)
    let number = batch
        .number(&rk, true)?
        .ok_or_else(|| StoreError::Corrupt("no room number given".into()))?;
    // Every idempotency key of the call, back to back in one buffer.
    let mut key_bytes = Vec::new();
    let spans: Vec<Option<std::ops::Range<usize>>> = msgs
        .iter()
        .map(|m| {
            m.cmid.as_deref().map(|cmid| {
                // As `idem_key` builds it.
                let start = key_bytes.len();
                key_bytes.extend_from_slice(&number.prefix());
                key_bytes.extend_from_slice(m.from.as_str().as_bytes());
                key_bytes.push(0);
                key_bytes.extend_from_slice(cmid.as_bytes());
                debug_assert_eq!(key_bytes[start..], idem_key(number, &m.from, cmid));
                start..key_bytes.len()
            })
        })
        .collect();
    let key_of = |span: &std::ops::Range<usize>| &key_bytes[span.clone()];
    // Reads: a key claimed earlier in this call, in this batch or on disk makes a duplicate.
    let mut outcomes = Vec::with_capacity(msgs.len());
    let mut in_call: HashMap<&[u8], usize> = HashMap::default();
    for (i, span) in spans.iter().enumerate() {
        let Some(span) = span else {
            outcomes.push(AppendOutcome::Stored);
            continue;
        };
        let ik = key_of(span);
        let earlier = if msgs.len() > 1 {
            in_call.get(ik).copied()
        } else {
            None
        };
        let outcome = match earlier {
            Some(j) => match &outcomes[j] {
                AppendOutcome::Stored => AppendOutcome::Duplicate(msgs[j].clone()),
                duplicate => duplicate.clone(),
            },
            // Certainly not stored (nearly every new cmid): no lookup.
            None if !batch.idem.may_hold(ik) => {
                batch.idem_skipped += 1;
                AppendOutcome::Stored
            }
            None => {
                batch.idem_looked_up += 1;
                match batch.get::<IdemEntry>(Table::Idem, ik)? {
                    Some(entry) if batch.now - entry.ts < IDEMPOTENCY_WINDOW_MS => {
                        let key = message_key(number, entry.id);
                        match batch.get::<StoredMessage>(Table::Messages, &key)? {
                            Some(first) => AppendOutcome::Duplicate(first),
                            None => AppendOutcome::Stored,
                        }
                    }
                    _ => AppendOutcome::Stored,
                }
            }
        };
        if earlier.is_none() && msgs.len() > 1 {
            in_call.insert(ik, i);
        }
        outcomes.push(outcome);
    }
    drop(in_call);
    batch.activity(&rk)?;
    // Writes: none of them can fail. Keys and records are built in two reused buffers.
    let mut newest = None;
    let mut record = Vec::with_capacity(256);
    for ((msg, span), outcome) in msgs.iter().zip(&spans).zip(&outcomes) {
        if *outcome != AppendOutcome::Stored {
            continue;
        }
        if let Some(span) = span {
            let entry = IdemEntry {
                id: msg.id,
                ts: msg.ts,
            };
            batch.put_slices(Table::Idem, key_of(span), &entry.to_bytes());
            batch.idem.insert(key_of(span));
        }
        record.clear();
        write_message(&mut record, msg);
        batch.put_slices(Table::Messages, &message_key(number, msg.id), &record);
        newest = newest.max(Some(msg.id));
    }
    if let Some(newest) = newest {
        let slot = batch.activity(&rk)?;
        let state = slot.state.get_or_insert_with(RawActivity::default);
        // The newest message is the room's last one; its record is taken from the batch at
        // commit (an empty record stands for that).
        if state.last.as_ref().is_none_or(|(id, _)| *id <= newest) {
            state.last = Some((newest, Vec::new()));
        }
        slot.dirty = true;
    }
    Ok(outcomes)
}

/// Deletes a room and everything under it, on disk and in this batch.
fn delete_room(batch: &mut Batch<'_>, group: &GroupId, room: &RoomId) -> StoreResult<()> {
    let prefix = room_prefix(group, room);
    for mk in batch.keys_with_prefix(Table::Members, &prefix)? {
        if let Some(member) = batch.get::<MemberRecord>(Table::Members, &mk)? {
            batch.remove(Table::UserRooms, user_room_key(&member.user, group, room));
        }
        batch.remove(Table::Members, mk);
    }
    for table in [Table::RoomMedia, Table::Mutes] {
        for k in batch.keys_with_prefix(table, &prefix)? {
            if table == Table::RoomMedia {
                // The key ends with the media id, after the room's prefix.
                batch.remove(Table::Media, k[prefix.len()..].to_vec());
            }
            batch.remove(table, k);
        }
    }
    let rk = room_key(group, room);
    if let Some(number) = batch.number(&rk, false)? {
        for table in [Table::Messages, Table::Idem] {
            for k in batch.keys_with_prefix(table, &number.prefix())? {
                batch.remove(table, k);
            }
        }
        batch.forget_number(&rk);
    }
    let slot = batch.activity(&rk)?;
    slot.state = None;
    slot.dirty = true;
    batch.remove(Table::Rooms, rk);
    Ok(())
}

/// Applies one write to the batch. Errors that concern only this write are answered at once;
/// the rest of the batch goes on.
fn apply(batch: &mut Batch<'_>, op: WriteOp, done: &mut Vec<Done>) {
    match op {
        WriteOp::CreateRoom {
            record,
            members,
            done: tx,
        } => {
            let result = (|| {
                let rk = room_key(&record.group, &record.room);
                if let Some(existing) = batch.get::<RoomRecord>(Table::Rooms, &rk)? {
                    // The existing room may be this very batch's (two creators at once):
                    // answered after the commit, so the caller never looks for a room not yet
                    // durable.
                    return Ok(CreateOutcome::Exists(existing));
                }
                let encoded = record.encode()?;
                let mut writes = Vec::with_capacity(2 * members.len());
                for member in &members {
                    writes.push((
                        Table::Members,
                        member_key(&record.group, &record.room, &member.user),
                        member.encode()?,
                    ));
                    writes.push((
                        Table::UserRooms,
                        user_room_key(&member.user, &record.group, &record.room),
                        encoded.clone(),
                    ));
                }
                let slot = batch.activity(&rk)?;
                slot.state = Some(RawActivity {
                    members: u32::try_from(members.len()).unwrap_or(u32::MAX),
                    last: None,
                });
                slot.dirty = true;
                batch.put_raw(Table::Rooms, rk, encoded);
                for (table, k, v) in writes {
                    batch.put_raw(table, k, v);
                }
                Ok(CreateOutcome::Created)
            })();
            answer(done, tx, result, Done::Create);
        }
        WriteOp::DeleteRoom {
            group,
            room,
            done: tx,
        } => {
            let result = delete_room(batch, &group, &room);
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::PutMember {
            group,
            room,
            member,
            done: tx,
        } => {
            let result = (|| {
                let rk = room_key(&group, &room);
                let Some(record) = batch.get::<RoomRecord>(Table::Rooms, &rk)? else {
                    return Ok(());
                };
                let mk = member_key(&group, &room, &member.user);
                let existed = batch.get::<MemberRecord>(Table::Members, &mk)?.is_some();
                let (member_bytes, record_bytes) = (member.encode()?, record.encode()?);
                if !existed {
                    batch.add_members(&rk, 1)?;
                }
                batch.put_raw(Table::Members, mk, member_bytes);
                batch.put_raw(
                    Table::UserRooms,
                    user_room_key(&member.user, &group, &room),
                    record_bytes,
                );
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::RemoveMember {
            group,
            room,
            user,
            done: tx,
        } => {
            let result = (|| {
                let mk = member_key(&group, &room, &user);
                if batch.get::<MemberRecord>(Table::Members, &mk)?.is_some() {
                    batch.add_members(&room_key(&group, &room), -1)?;
                    // A member who leaves takes their mute with them.
                    batch.remove(Table::Mutes, mk.clone());
                    batch.remove(Table::Members, mk);
                    batch.remove(Table::UserRooms, user_room_key(&user, &group, &room));
                }
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::SaveCursors {
            group,
            room,
            mut cursors,
            done: tx,
        } => {
            let result = (|| {
                // In key order (the room's members share the key's prefix): each lookup then
                // finds the memtable's path and the table blocks of the one before it.
                cursors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut writes = Vec::with_capacity(cursors.len());
                for (user, cursor, cursor_seq) in cursors {
                    let mk = member_key(&group, &room, &user);
                    if let Some(mut member) = batch.get::<MemberRecord>(Table::Members, &mk)?
                        && (cursor > member.cursor || cursor_seq > member.cursor_seq)
                    {
                        member.cursor = member.cursor.max(cursor);
                        member.cursor_seq = member.cursor_seq.max(cursor_seq);
                        writes.push((mk, member.encode()?));
                    }
                }
                for (mk, bytes) in writes {
                    batch.put_raw(Table::Members, mk, bytes);
                }
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::Append {
            group,
            room,
            msgs,
            done: tx,
        } => {
            let result = append(batch, &group, &room, msgs);
            answer(done, tx, result, Done::Append);
        }
        WriteOp::Update {
            group,
            room,
            msg,
            done: tx,
        } => {
            let result = (|| {
                let rk = room_key(&group, &room);
                let Some(number) = batch.number(&rk, false)? else {
                    return Ok(());
                };
                let mk = message_key(number, msg.id).to_vec();
                let Some(existing) = batch.get::<StoredMessage>(Table::Messages, &mk)? else {
                    return Ok(());
                };
                // Deletion wins: a tombstone is never replaced by a live version.
                if existing.deleted && !msg.deleted {
                    return Ok(());
                }
                let slot = batch.activity(&rk)?;
                if slot
                    .state
                    .as_ref()
                    .and_then(|s| s.last.as_ref())
                    .is_some_and(|(id, _)| *id == msg.id)
                {
                    // The activity record takes the new version from the batch at commit.
                    slot.dirty = true;
                }
                batch.put_raw(Table::Messages, mk, encode_message(&msg));
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::PutMedia { media, done: tx } => {
            let result = (|| {
                let bytes = media.encode()?;
                batch.put(
                    Table::RoomMedia,
                    room_media_key(&media.group, &media.room, &media.id),
                    &(),
                )?;
                batch.put_raw(Table::Media, media.id.as_bytes().to_vec(), bytes);
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::MarkThumbnail { id, done: tx } => {
            let result = (|| {
                let key = id.as_bytes().to_vec();
                let Some(mut media) = batch.get::<MediaRecord>(Table::Media, &key)? else {
                    return Ok(false);
                };
                media.has_thumbnail = true;
                batch.put(Table::Media, key, &media)?;
                Ok(true)
            })();
            answer(done, tx, result, Done::Bool);
        }
        WriteOp::DeleteMedia { id, done: tx } => {
            let result = (|| {
                let key = id.as_bytes().to_vec();
                if let Some(media) = batch.get::<MediaRecord>(Table::Media, &key)? {
                    batch.remove(
                        Table::RoomMedia,
                        room_media_key(&media.group, &media.room, &media.id),
                    );
                    batch.remove(Table::Media, key);
                }
                Ok(())
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::PutDevice {
            user,
            mut device,
            done: tx,
        } => {
            let result = (|| {
                let dk = device_key(&user, &device.token);
                if let Some(existing) = batch.get::<DeviceRecord>(Table::Devices, &dk)? {
                    device.created = existing.created;
                }
                batch.put(Table::Devices, dk, &device)
            })();
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
        WriteOp::DeleteDevice {
            user,
            token,
            done: tx,
        } => {
            batch.remove(Table::Devices, device_key(&user, &token));
            done.push(Done::Unit(tx));
        }
        WriteOp::SetMuted {
            group,
            room,
            user,
            muted,
            done: tx,
        } => {
            let mk = member_key(&group, &room, &user);
            let result = if muted {
                batch.put(Table::Mutes, mk, &now_ms())
            } else {
                batch.remove(Table::Mutes, mk);
                Ok(())
            };
            answer(done, tx, result, |tx, ()| Done::Unit(tx));
        }
    }
}

/// Deletes idempotency keys older than the window, and returns how many it deleted and a
/// filter of the keys that stay (built in the same pass; the caller is the writer, so no key
/// is written meanwhile). Expired keys need not be in the filter: the lookup would treat them
/// as absent anyway.
fn sweep_idempotency_keys(tables: &Tables) -> StoreResult<(usize, IdemFilter)> {
    let cutoff = now_ms() - IDEMPOTENCY_WINDOW_MS;
    let mut batch = Batch::new(tables);
    let mut filter = IdemFilter::sized_for(2 * tables.idem.approximate_len());
    for guard in tables.idem.iter() {
        let (k, v) = guard.into_inner().map_err(io_err)?;
        if IdemEntry::decode(&v).map(|e| e.ts < cutoff).unwrap_or(true) {
            batch.remove(Table::Idem, k.to_vec());
        } else {
            filter.insert(&k);
        }
    }
    let swept = batch.map(Table::Idem).len();
    batch.commit()?;
    Ok((swept, filter))
}

/// Sweeps expired idempotency keys when it is time, and replaces `filter` with the one the
/// sweep built. A failed sweep keeps the filter it had (still complete: the writer adds every
/// key it writes).
fn sweep(tables: &Tables, next_sweep: &mut Instant, filter: &mut IdemFilter) {
    if Instant::now() >= *next_sweep {
        *next_sweep = Instant::now() + SWEEP_EVERY;
        let started = Instant::now();
        match sweep_idempotency_keys(tables) {
            Ok((n, rebuilt)) => {
                *filter = rebuilt;
                filter.report_size();
                tracing::debug!(
                    swept = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "expired idempotency keys removed, idempotency filter rebuilt"
                );
            }
            Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
        }
    }
}

/// The writer thread: applies batches on the open tables until the store closes, and reopens
/// the tables whenever a batch fails (see `health`).
fn writer_loop(shared: Arc<Shared>, rx: std_mpsc::Receiver<WriteOp>) {
    // The first sweep, before any write, builds the idempotency filter. It is kept across
    // reopenings: it may hold keys of a batch that failed, which only costs a lookup.
    let mut idem = IdemFilter::unknown();
    let mut next_sweep = Instant::now();
    let mut tables = match shared.tables() {
        Ok(tables) => tables,
        Err(e) => {
            tracing::error!(error = %e, "the store writer found no tables");
            return;
        }
    };
    loop {
        let mut batch = Batch::new(&tables);
        batch.idem = std::mem::replace(&mut idem, IdemFilter::unknown());
        let failed = write_batches(&mut batch, &rx, &mut next_sweep);
        idem = std::mem::replace(&mut batch.idem, IdemFilter::unknown());
        drop(batch);
        let Some(failed) = failed else {
            if let Err(e) = tables.db.persist(PersistMode::SyncAll) {
                tracing::error!(error = %e, "final store sync failed");
            }
            return;
        };
        // The reopening waits for every other handle of the old tables.
        drop(tables);
        tables = match health::recover(&shared, &rx, failed) {
            Some(tables) => tables,
            None => return,
        };
    }
}

/// Applies batches until the store closes (`None`) or a batch fails: then fjall refuses every
/// later write, and the failed batch, with its answers held back, goes to `health::recover`.
fn write_batches(
    batch: &mut Batch<'_>,
    rx: &std_mpsc::Receiver<WriteOp>,
    next_sweep: &mut Instant,
) -> Option<Failed> {
    let tables = batch.tables;
    let mut last = match health::last_batch(tables) {
        Ok(last) => last,
        Err(e) => {
            return Some(Failed {
                batch: u64::MAX,
                why: e.reason(),
                done: Vec::new(),
            });
        }
    };
    sweep(tables, next_sweep, &mut batch.idem);
    let mut done = Vec::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(op) => op,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                sweep(tables, next_sweep, &mut batch.idem);
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
        };
        let started = Instant::now();
        batch.now = now_ms();
        let mut count = first.weight();
        apply(batch, first, &mut done);
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    count += op.weight();
                    apply(batch, op, &mut done);
                }
                Err(_) => break,
            }
        }
        let number = last + 1;
        let result = batch.commit_numbered(Some(number));
        metrics::histogram!("chatnode_store_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("chatnode_store_batch_size").record(count as f64);
        for (result, n) in [
            ("skipped", std::mem::take(&mut batch.idem_skipped)),
            ("looked_up", std::mem::take(&mut batch.idem_looked_up)),
        ] {
            if n > 0 {
                metrics::counter!("chatnode_store_idem_lookups_total", "result" => result)
                    .increment(n);
            }
        }
        if let Err(e) = result {
            batch.clear();
            tracing::error!(error = %e, "store batch failed; the store is reopened");
            return Some(Failed {
                batch: number,
                why: e.reason(),
                done: std::mem::take(&mut done),
            });
        }
        last = number;
        for d in done.drain(..) {
            d.finish(&Ok(()));
        }
        // A busy node is never idle for long: sweep between batches too.
        sweep(tables, next_sweep, &mut batch.idem);
    }
}

/// The embedded store. Cloning shares it.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: std::sync::Mutex<Option<std_mpsc::Sender<WriteOp>>>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    queue: Arc<Semaphore>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let shared = Arc::new(Shared::open(dir.to_path_buf())?);
        let (tx, rx) = std_mpsc::channel();
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(thread_shared, rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            shared,
            writer: std::sync::Mutex::new(Some(tx)),
            writer_thread: std::sync::Mutex::new(Some(handle)),
            queue: Arc::new(Semaphore::new(MAX_QUEUED_WRITES)),
        })
    }

    /// Hands a write of `weight` (see [`WriteOp::weight`]) to the writer and waits until it is
    /// durable.
    async fn write<T>(
        &self,
        weight: usize,
        make: impl FnOnce(Reply<T>) -> WriteOp,
    ) -> StoreResult<T> {
        let permits = u32::try_from(weight.clamp(1, MAX_QUEUED_WRITES)).unwrap_or(1);
        let _permit = self
            .queue
            .acquire_many(permits)
            .await
            .map_err(|_| StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        {
            let writer = self.writer.lock().map_err(|_| StoreError::Closed)?;
            let sender = writer.as_ref().ok_or(StoreError::Closed)?;
            sender.send(make(tx)).map_err(|_| StoreError::Closed)?;
        }
        let started = Instant::now();
        let result = rx.await.map_err(|_| StoreError::Closed)?;
        metrics::histogram!("chatnode_store_write_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tables) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let tables = self.shared.tables()?;
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Reads answer, and writes are not refused (see `health`).
    async fn ping(&self) -> StoreResult<()> {
        self.read(|t| t.get::<RoomRecord>(Table::Rooms, b"\0ping").map(|_| ()))
            .await?;
        self.shared.health()?;
        if self
            .writer
            .lock()
            .map_err(|_| StoreError::Closed)?
            .is_none()
        {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn create_room(
        &self,
        record: RoomRecord,
        members: Vec<MemberRecord>,
    ) -> StoreResult<CreateOutcome> {
        self.write(1, |done| WriteOp::CreateRoom {
            record,
            members,
            done,
        })
        .await
    }

    async fn get_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<Option<RoomRecord>> {
        let rk = room_key(group, room);
        self.read(move |t| t.get(Table::Rooms, &rk)).await
    }

    async fn delete_room(&self, group: &GroupId, room: &RoomId) -> StoreResult<()> {
        let (group, room) = (group.clone(), room.clone());
        self.write(1, |done| WriteOp::DeleteRoom { group, room, done })
            .await
    }

    async fn load_room(
        &self,
        group: &GroupId,
        room: &RoomId,
        recent: usize,
    ) -> StoreResult<Option<LoadedRoom>> {
        let (group, room) = (group.clone(), room.clone());
        self.read(move |t| {
            let rk = room_key(&group, &room);
            let Some(record) = t.get::<RoomRecord>(Table::Rooms, &rk)? else {
                return Ok(None);
            };
            let members = t.scan(Table::Members, &room_prefix(&group, &room))?;
            let page = t.messages_before(&rk, None, recent)?;
            Ok(Some(LoadedRoom {
                record,
                members,
                recent: page.msgs,
            }))
        })
        .await
    }

    async fn put_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        member: MemberRecord,
    ) -> StoreResult<()> {
        let (group, room) = (group.clone(), room.clone());
        self.write(1, |done| WriteOp::PutMember {
            group,
            room,
            member,
            done,
        })
        .await
    }

    async fn remove_member(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
    ) -> StoreResult<()> {
        let (group, room, user) = (group.clone(), room.clone(), user.clone());
        self.write(1, |done| WriteOp::RemoveMember {
            group,
            room,
            user,
            done,
        })
        .await
    }

    async fn save_cursors(
        &self,
        group: &GroupId,
        room: &RoomId,
        cursors: Vec<(UserId, MessageId, u64)>,
    ) -> StoreResult<()> {
        let (group, room) = (group.clone(), room.clone());
        self.write(1, |done| WriteOp::SaveCursors {
            group,
            room,
            cursors,
            done,
        })
        .await
    }

    async fn append_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<AppendOutcome> {
        self.append_messages(group, room, vec![msg])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Unavailable("the writer answered no outcome".into()))
    }

    async fn append_messages(
        &self,
        group: &GroupId,
        room: &RoomId,
        msgs: Vec<StoredMessage>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let (group, room) = (group.clone(), room.clone());
        self.write(msgs.len(), |done| WriteOp::Append {
            group,
            room,
            msgs,
            done,
        })
        .await
    }

    async fn update_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        msg: StoredMessage,
    ) -> StoreResult<()> {
        let (group, room) = (group.clone(), room.clone());
        self.write(1, |done| WriteOp::Update {
            group,
            room,
            msg,
            done,
        })
        .await
    }

    async fn get_message(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>> {
        let rk = room_key(group, room);
        self.read(move |t| match t.number(&rk)? {
            Some(number) => t.get(Table::Messages, &message_key(number, id)),
            None => Ok(None),
        })
        .await
    }

    async fn messages_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page> {
        let rk = room_key(group, room);
        self.read(move |t| t.messages_before(&rk, before, limit))
            .await
    }

    async fn messages_after(
        &self,
        group: &GroupId,
        room: &RoomId,
        since: MessageId,
        limit: usize,
    ) -> StoreResult<Page> {
        let rk = room_key(group, room);
        self.read(move |t| t.messages_after(&rk, since, limit))
            .await
    }

    async fn message_at_or_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>> {
        let rk = room_key(group, room);
        self.read(move |t| {
            let Some(number) = t.number(&rk)? else {
                return Ok(None);
            };
            let start = message_key(number, 0);
            let end = message_key(number, id);
            match t.messages.range(start..=end).next_back() {
                Some(guard) => {
                    let (_, value) = guard.into_inner().map_err(io_err)?;
                    StoredMessage::decode(&value).map(Some)
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn chat_list(&self, user: &UserId, group: &GroupId) -> StoreResult<Vec<ChatListEntry>> {
        let (user, group) = (user.clone(), group.clone());
        self.read(move |t| t.chat_list(&user, &group)).await
    }

    async fn put_media(&self, media: MediaRecord) -> StoreResult<()> {
        self.write(1, |done| WriteOp::PutMedia { media, done })
            .await
    }

    async fn get_media(&self, id: &str) -> StoreResult<Option<MediaRecord>> {
        let key = id.as_bytes().to_vec();
        self.read(move |t| t.get(Table::Media, &key)).await
    }

    async fn set_media_thumbnail(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(1, |done| WriteOp::MarkThumbnail { id, done })
            .await
    }

    async fn delete_media(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(1, |done| WriteOp::DeleteMedia { id, done })
            .await
    }

    async fn put_device(&self, user: &UserId, device: DeviceRecord) -> StoreResult<()> {
        let user = user.clone();
        self.write(1, |done| WriteOp::PutDevice { user, device, done })
            .await
    }

    async fn delete_device(&self, user: &UserId, token: &str) -> StoreResult<()> {
        let (user, token) = (user.clone(), token.to_owned());
        self.write(1, |done| WriteOp::DeleteDevice { user, token, done })
            .await
    }

    async fn devices_of(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, Vec<DeviceRecord>)>> {
        let users = users.to_vec();
        self.read(move |t| {
            let mut out = Vec::new();
            for user in users {
                let devices: Vec<DeviceRecord> = t.scan(Table::Devices, &devices_prefix(&user))?;
                if !devices.is_empty() {
                    out.push((user, devices));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_muted(
        &self,
        group: &GroupId,
        room: &RoomId,
        user: &UserId,
        muted: bool,
    ) -> StoreResult<()> {
        let (group, room, user) = (group.clone(), room.clone(), user.clone());
        self.write(1, |done| WriteOp::SetMuted {
            group,
            room,
            user,
            muted,
            done,
        })
        .await
    }

    async fn muted_among(
        &self,
        group: &GroupId,
        room: &RoomId,
        users: &[UserId],
    ) -> StoreResult<std::collections::HashSet<UserId>> {
        let (group, room, users) = (group.clone(), room.clone(), users.to_vec());
        self.read(move |t| {
            let mut out = std::collections::HashSet::new();
            for user in users {
                if t.mutes
                    .contains_key(member_key(&group, &room, &user))
                    .map_err(io_err)?
                {
                    out.insert(user);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn close(&self) -> StoreResult<()> {
        let sender = self.writer.lock().map_err(|_| StoreError::Closed)?.take();
        drop(sender);
        let handle = self
            .writer_thread
            .lock()
            .map_err(|_| StoreError::Closed)?
            .take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
                .map_err(|_| StoreError::Unavailable("the store writer panicked".into()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{member, record};

    /// A text message whose seq is its id.
    fn message(id: MessageId, from: &UserId, text: &str, cmid: Option<&str>) -> StoredMessage {
        crate::store::conformance::message(id, id, from, text, cmid)
    }

    fn ids() -> (GroupId, RoomId, UserId) {
        (
            GroupId::parse("g").expect("id"),
            RoomId::parse("r").expect("id"),
            UserId::parse("alice").expect("id"),
        )
    }

    /// Applies `ops` as one batch, as the writer would, and commits it.
    fn one_batch(tables: &Tables, ops: Vec<WriteOp>) {
        let mut batch = Batch::new(tables);
        let mut done = Vec::new();
        for op in ops {
            apply(&mut batch, op, &mut done);
        }
        let result = batch.commit();
        assert!(result.is_ok(), "commit: {result:?}");
        for d in done {
            d.finish(&result);
        }
    }

    fn append_op(
        group: &GroupId,
        room: &RoomId,
        msgs: Vec<StoredMessage>,
    ) -> (WriteOp, oneshot::Receiver<StoreResult<Vec<AppendOutcome>>>) {
        let (done, rx) = oneshot::channel();
        let op = WriteOp::Append {
            group: group.clone(),
            room: room.clone(),
            msgs,
            done,
        };
        (op, rx)
    }

    fn create_op(group: &GroupId, room: &RoomId, user: &UserId) -> WriteOp {
        let (done, _) = oneshot::channel();
        WriteOp::CreateRoom {
            record: record(group, room, user),
            members: vec![member(user)],
            done,
        }
    }

    #[test]
    fn a_room_deleted_in_the_batch_of_its_appends_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let tables = Tables::open(dir.path()).expect("open");
        let (group, room, alice) = ids();
        one_batch(&tables, vec![create_op(&group, &room, &alice)]);
        let (append, rx) = append_op(
            &group,
            &room,
            vec![
                message(1, &alice, "a", Some("c1")),
                message(2, &alice, "b", None),
            ],
        );
        let (done, _) = oneshot::channel();
        let delete = WriteOp::DeleteRoom {
            group: group.clone(),
            room: room.clone(),
            done,
        };
        one_batch(&tables, vec![append, delete]);
        let mut rx = rx;
        assert!(matches!(rx.try_recv(), Ok(Ok(o)) if o.len() == 2));
        assert_eq!(tables.members.prefix(room_prefix(&group, &room)).count(), 0);
        // The only room's messages, idempotency keys and number are all gone.
        for ks in [&tables.messages, &tables.idem] {
            assert_eq!(ks.iter().count(), 0);
        }
        assert!(
            tables
                .number(&room_key(&group, &room))
                .expect("get")
                .is_none()
        );
        assert!(
            tables
                .activity
                .get(room_key(&group, &room))
                .expect("get")
                .is_none()
        );
        assert!(tables.chat_list(&alice, &group).expect("list").is_empty());
    }

    #[test]
    fn duplicates_and_edits_within_one_batch_see_the_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let tables = Tables::open(dir.path()).expect("open");
        let (group, room, alice) = ids();
        one_batch(&tables, vec![create_op(&group, &room, &alice)]);
        let first = message(10, &alice, "hello", Some("c"));
        let (a, mut rx_a) = append_op(&group, &room, vec![first.clone()]);
        let (b, mut rx_b) = append_op(&group, &room, vec![message(11, &alice, "again", Some("c"))]);
        let (done, _) = oneshot::channel();
        let edited = StoredMessage {
            text: Some("hello, edited".into()),
            edited: Some(5),
            ..first.clone()
        };
        let edit = WriteOp::Update {
            group: group.clone(),
            room: room.clone(),
            msg: edited.clone(),
            done,
        };
        one_batch(&tables, vec![a, b, edit]);
        assert_eq!(
            rx_a.try_recv().ok().and_then(Result::ok),
            Some(vec![AppendOutcome::Stored])
        );
        assert_eq!(
            rx_b.try_recv().ok().and_then(Result::ok),
            Some(vec![AppendOutcome::Duplicate(first)])
        );
        let list = tables.chat_list(&alice, &group).expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last.as_ref(), Some(&edited));
        assert_eq!((list[0].members, list[0].unread), (1, 10));
        let page = tables
            .messages_before(&room_key(&group, &room), None, 10)
            .expect("page");
        assert_eq!(page.msgs, vec![edited]);
    }

    #[test]
    fn an_older_message_appended_late_does_not_become_the_last() {
        let dir = tempfile::tempdir().expect("dir");
        let tables = Tables::open(dir.path()).expect("open");
        let (group, room, alice) = ids();
        one_batch(&tables, vec![create_op(&group, &room, &alice)]);
        let (a, _) = append_op(&group, &room, vec![message(20, &alice, "new", None)]);
        one_batch(&tables, vec![a]);
        let (b, _) = append_op(&group, &room, vec![message(15, &alice, "late", None)]);
        one_batch(&tables, vec![b]);
        let list = tables.chat_list(&alice, &group).expect("list");
        assert_eq!(list[0].last.as_ref().map(|m| m.id), Some(20));
    }

    /// A data directory written by earlier versions (messages and idempotency keys filed under
    /// the room's names, records in named MessagePack) is moved to numbered rooms when it
    /// opens; its records are read, and rewritten in the new layout when they change.
    #[tokio::test]
    async fn a_data_directory_in_the_older_format_keeps_working() {
        #[derive(serde::Serialize)]
        struct LegacyActivity {
            members: u32,
            last: Option<StoredMessage>,
        }
        #[derive(serde::Serialize)]
        struct LegacyIdem {
            id: MessageId,
            ts: i64,
        }
        fn named<T: serde::Serialize>(value: &T) -> Vec<u8> {
            rmp_serde::to_vec_named(value).expect("encode")
        }
        let dir = tempfile::tempdir().expect("dir");
        let (group, room, alice) = ids();
        let old = message(7, &alice, "from before", Some("c-old"));
        {
            let db = Database::builder(dir.path()).open().expect("old database");
            let put = |name: &str, k: Vec<u8>, v: Vec<u8>| {
                db.keyspace(name, KeyspaceCreateOptions::default)
                    .expect("keyspace")
                    .insert(k, v)
                    .expect("insert");
            };
            put(
                "rooms",
                room_key(&group, &room),
                named(&record(&group, &room, &alice)),
            );
            put(
                "user_rooms",
                user_room_key(&alice, &group, &room),
                named(&record(&group, &room, &alice)),
            );
            put(
                "members",
                member_key(&group, &room, &alice),
                named(&member(&alice)),
            );
            let mut message_key = room_prefix(&group, &room);
            message_key.extend_from_slice(&7u64.to_be_bytes());
            put("messages", message_key, named(&old));
            put(
                "activity",
                room_key(&group, &room),
                named(&LegacyActivity {
                    members: 1,
                    last: Some(old.clone()),
                }),
            );
            put(
                "idem",
                key(&[
                    group.as_str().as_bytes(),
                    room.as_str().as_bytes(),
                    alice.as_str().as_bytes(),
                    b"c-old",
                ]),
                named(&LegacyIdem { id: 7, ts: old.ts }),
            );
            db.persist(PersistMode::SyncAll).expect("sync");
        }
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let t = &*store.shared.tables().expect("tables");
        assert!(!t.db.keyspace_exists("messages") && !t.db.keyspace_exists("idem"));
        assert_eq!(
            t.number(&room_key(&group, &room)).expect("get"),
            Some(RoomNo(1))
        );
        let list = store.chat_list(&alice, &group).await.expect("list");
        assert_eq!(list[0].last.as_ref(), Some(&old));
        let dup = store
            .append_message(&group, &room, message(8, &alice, "retry", Some("c-old")))
            .await
            .expect("dup");
        assert_eq!(dup, AppendOutcome::Duplicate(old.clone()));
        let new = message(9, &alice, "new", Some("c-new"));
        store
            .append_message(&group, &room, new.clone())
            .await
            .expect("append");
        let list = store.chat_list(&alice, &group).await.expect("list");
        assert_eq!((list[0].members, list[0].last.as_ref()), (1, Some(&new)));
        let activity = t
            .activity
            .get(room_key(&group, &room))
            .expect("get")
            .expect("row");
        assert_eq!(activity[0], codec::MARKER);
        let page = store
            .messages_before(&group, &room, None, 10)
            .await
            .expect("page");
        assert_eq!(page.msgs, vec![old, new]);
        store.close().await.expect("close");
    }

    /// The writer's idempotency filter is built from the keyspace at start: a resend after a
    /// restart is still a duplicate, and a key that expired meanwhile is swept at that start
    /// (its resend is a new message).
    #[tokio::test]
    async fn a_resend_after_a_restart_is_still_a_duplicate() {
        let dir = tempfile::tempdir().expect("dir");
        let (group, room, alice) = ids();
        let first = message(1, &alice, "hi", Some("c-1"));
        let mut stale = message(2, &alice, "long ago", Some("c-2"));
        stale.ts -= IDEMPOTENCY_WINDOW_MS + 1_000;
        {
            let store = EmbeddedStore::open(dir.path()).expect("open");
            store
                .create_room(record(&group, &room, &alice), vec![member(&alice)])
                .await
                .expect("create");
            for m in [&first, &stale] {
                let outcome = store.append_message(&group, &room, m.clone()).await;
                assert_eq!(outcome.expect("append"), AppendOutcome::Stored);
            }
            store.close().await.expect("close");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let again = store
            .append_message(&group, &room, message(3, &alice, "hi", Some("c-1")))
            .await
            .expect("resend");
        assert_eq!(again, AppendOutcome::Duplicate(first));
        // The writer swept before its first write: the expired key is gone.
        let tables = store.shared.tables().expect("tables");
        let number = tables.number(&room_key(&group, &room)).expect("get");
        let key = idem_key(number.expect("numbered"), &alice, "c-2");
        assert_eq!(tables.idem.get(&key).expect("get"), None);
        let late = store
            .append_message(&group, &room, message(4, &alice, "long ago", Some("c-2")))
            .await
            .expect("late resend");
        assert_eq!(late, AppendOutcome::Stored);
        let entry = tables.idem.get(&key).expect("get").expect("the new key");
        assert_eq!(IdemEntry::decode(&entry).expect("entry").id, 4);
        store.close().await.expect("close");
    }

    /// A move to numbered rooms that stopped half way (the old keyspace still there, some of
    /// its keys already copied and numbers given) is finished on the next start: numbers
    /// already given are kept, rooms met for the first time get the next ones.
    #[tokio::test]
    async fn a_move_that_stopped_half_way_is_finished_on_the_next_start() {
        let dir = tempfile::tempdir().expect("dir");
        let (group, room, alice) = ids();
        let other = RoomId::parse("other").expect("id");
        let (five, ten) = (
            message(5, &alice, "moved late", None),
            message(10, &alice, "new", None),
        );
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store
            .create_room(record(&group, &room, &alice), vec![member(&alice)])
            .await
            .expect("create");
        store
            .append_message(&group, &room, ten.clone())
            .await
            .expect("append");
        store.close().await.expect("close");
        drop(store);
        {
            let db = Database::builder(dir.path()).open().expect("database");
            let old = db
                .keyspace("messages", KeyspaceCreateOptions::default)
                .expect("keyspace");
            for (r, msg) in [
                (&room, &five),
                (&other, &message(3, &alice, "elsewhere", None)),
            ] {
                let mut k = room_prefix(&group, r);
                k.extend_from_slice(&msg.id.to_be_bytes());
                old.insert(k, encode_message(msg)).expect("insert");
            }
            db.persist(PersistMode::SyncAll).expect("sync");
        }
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let t = &*store.shared.tables().expect("tables");
        assert!(!t.db.keyspace_exists("messages"));
        assert_eq!(
            t.number(&room_key(&group, &room)).expect("get"),
            Some(RoomNo(1))
        );
        assert_eq!(
            t.number(&room_key(&group, &other)).expect("get"),
            Some(RoomNo(2))
        );
        let page = store
            .messages_before(&group, &room, None, 10)
            .await
            .expect("page");
        assert_eq!(page.msgs, vec![five, ten]);
        let page = store
            .messages_before(&group, &other, None, 10)
            .await
            .expect("page");
        assert_eq!(page.msgs.len(), 1);
        // A room's first message after the move gets the number after those.
        let third = RoomId::parse("third").expect("id");
        store
            .append_message(&group, &third, message(11, &alice, "hi", None))
            .await
            .expect("append");
        assert_eq!(
            t.number(&room_key(&group, &third)).expect("get"),
            Some(RoomNo(3))
        );
        store.close().await.expect("close");
    }
}
