//! The embedded store: fjall (an LSM tree, like ScyllaDB) in the node's data directory.
//!
//! All writes go through one writer thread that performs **group commit**: it takes every write
//! waiting in its queue, applies them as one atomic batch, syncs the journal to disk once, and
//! only then answers each caller. One fsync thus covers hundreds of messages. Because there is
//! a single writer, read-then-write rules (idempotency keys, create-if-absent, member counts)
//! are atomic without locks. Reads run on tokio's blocking pool.
//!
//! Keyspaces and keys (`\0` separates parts; group and room ids cannot contain it, user ids may
//! not contain control characters):
//! - `rooms`: `group\0room` → [`RoomRecord`]
//! - `members`: `group\0room\0user` → [`MemberRecord`]
//! - `user_rooms`: `user\0group\0room` → [`RoomRecord`] (a copy, for the chat list)
//! - `messages`: `group\0room\0` + id (8 bytes, big endian) → [`StoredMessage`]
//! - `activity`: `group\0room` → [`Activity`] (member count and last message)
//! - `idem`: `group\0room\0user\0cmid` → [`IdemEntry`]
//! - `media`: media id → [`MediaRecord`]
//! - `room_media`: `group\0room\0` + media id → nothing (a room's media, for deleting the room)
//! - `devices`: `user\0token` → [`DeviceRecord`] (push devices)
//! - `mutes`: `group\0room\0user` → the time it was muted (a muted room sends that user no push)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Semaphore, oneshot};

use super::{
    AppendOutcome, ChatListEntry, CreateOutcome, DeviceRecord, IDEMPOTENCY_WINDOW_MS, LoadedRoom,
    MediaRecord, MemberRecord, Page, RoomRecord, Store, StoreError, StoreResult, StoredMessage,
};
use crate::ids::{GroupId, MessageId, RoomId, UserId, now_ms};

/// How many writes may wait for the writer at once before callers wait for room.
const MAX_QUEUED_WRITES: usize = 65_536;
/// The most writes applied in one batch (one fsync).
const MAX_BATCH: usize = 4_096;
/// How often expired idempotency keys are swept away.
const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// A room's activity: its member count and last message, kept for the chat list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Activity {
    members: u32,
    last: Option<StoredMessage>,
}

/// An idempotency key's value: the message it produced and when.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct IdemEntry {
    id: MessageId,
    ts: i64,
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn io_err(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
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

fn message_key(group: &GroupId, room: &RoomId, id: MessageId) -> Vec<u8> {
    let mut k = room_prefix(group, room);
    k.extend_from_slice(&id.to_be_bytes());
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

fn idem_key(group: &GroupId, room: &RoomId, user: &UserId, cmid: &str) -> Vec<u8> {
    key(&[
        group.as_str().as_bytes(),
        room.as_str().as_bytes(),
        user.as_str().as_bytes(),
        cmid.as_bytes(),
    ])
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
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Rooms,
    Members,
    UserRooms,
    Messages,
    Activity,
    Idem,
    Media,
    RoomMedia,
    Devices,
    Mutes,
}

impl Tables {
    fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::builder(path)
            .cache_size(64 * 1024 * 1024)
            .open()
            .map_err(io_err)?;
        let open = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(io_err)
        };
        Ok(Self {
            rooms: open("rooms")?,
            members: open("members")?,
            user_rooms: open("user_rooms")?,
            messages: open("messages")?,
            activity: open("activity")?,
            idem: open("idem")?,
            media: open("media")?,
            room_media: open("room_media")?,
            devices: open("devices")?,
            mutes: open("mutes")?,
            db,
        })
    }

    fn table(&self, table: Table) -> &Keyspace {
        match table {
            Table::Rooms => &self.rooms,
            Table::Members => &self.members,
            Table::UserRooms => &self.user_rooms,
            Table::Messages => &self.messages,
            Table::Activity => &self.activity,
            Table::Idem => &self.idem,
            Table::Media => &self.media,
            Table::RoomMedia => &self.room_media,
            Table::Devices => &self.devices,
            Table::Mutes => &self.mutes,
        }
    }

    fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> StoreResult<Option<T>> {
        match self.table(table).get(key).map_err(io_err)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, table: Table, prefix: &[u8]) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for guard in self.table(table).prefix(prefix) {
            let (_, value) = guard.into_inner().map_err(io_err)?;
            out.push(decode(&value)?);
        }
        Ok(out)
    }

    fn messages_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page> {
        let start = message_key(group, room, 0);
        // Snowflakes never reach `u64::MAX`, so an exclusive end there misses nothing.
        let end = message_key(group, room, before.unwrap_or(u64::MAX));
        let mut msgs = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for guard in self.messages.range(start..end).rev() {
            if msgs.len() == limit {
                more = true;
                break;
            }
            let (_, value) = guard.into_inner().map_err(io_err)?;
            msgs.push(decode::<StoredMessage>(&value)?);
        }
        msgs.reverse();
        Ok(Page { msgs, more })
    }

    fn messages_after(
        &self,
        group: &GroupId,
        room: &RoomId,
        since: MessageId,
        limit: usize,
    ) -> StoreResult<Page> {
        let Some(start_id) = since.checked_add(1) else {
            return Ok(Page {
                msgs: Vec::new(),
                more: false,
            });
        };
        let start = message_key(group, room, start_id);
        let end = message_key(group, room, u64::MAX);
        let mut msgs = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for guard in self.messages.range(start..=end) {
            if msgs.len() == limit {
                more = true;
                break;
            }
            let (_, value) = guard.into_inner().map_err(io_err)?;
            msgs.push(decode::<StoredMessage>(&value)?);
        }
        Ok(Page { msgs, more })
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
    Append {
        group: GroupId,
        room: RoomId,
        msg: StoredMessage,
        done: Reply<AppendOutcome>,
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

/// A batch being built: the last value of every key it writes (`None` is a deletion), which
/// later writes in the batch also read. Only the last value of a key is committed, so a room's
/// activity record rewritten for every message of a batch is written to disk once.
struct Batch<'t> {
    tables: &'t Tables,
    overlay: HashMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl<'t> Batch<'t> {
    fn new(tables: &'t Tables) -> Self {
        Self {
            tables,
            overlay: HashMap::new(),
        }
    }

    fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> StoreResult<Option<T>> {
        match self.overlay.get(&(table, key.to_vec())) {
            Some(Some(bytes)) => decode(bytes).map(Some),
            Some(None) => Ok(None),
            None => self.tables.get(table, key),
        }
    }

    fn put<T: Serialize>(&mut self, table: Table, key: Vec<u8>, value: &T) -> StoreResult<()> {
        let bytes = encode(value)?;
        self.overlay.insert((table, key), Some(bytes));
        Ok(())
    }

    fn remove(&mut self, table: Table, key: Vec<u8>) {
        self.overlay.insert((table, key), None);
    }

    /// Commits the batch and syncs the journal: after this returns `Ok`, it is durable.
    fn commit(self) -> StoreResult<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        let mut batch = self
            .tables
            .db
            .batch()
            .durability(Some(PersistMode::SyncAll));
        for ((table, key), value) in self.overlay {
            let keyspace = self.tables.table(table);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        batch.commit().map_err(io_err)
    }
}

/// Answers queued after a batch commits.
enum Done {
    Create(Reply<CreateOutcome>, CreateOutcome),
    Unit(Reply<()>),
    Append(Reply<AppendOutcome>, AppendOutcome),
    Bool(Reply<bool>, bool),
}

impl Done {
    fn finish(self, result: &StoreResult<()>) {
        let err = || match result {
            Err(e) => StoreError::Unavailable(e.to_string()),
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

fn activity_of(batch: &Batch<'_>, group: &GroupId, room: &RoomId) -> StoreResult<Activity> {
    Ok(batch
        .get::<Activity>(Table::Activity, &room_key(group, room))?
        .unwrap_or_default())
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
                    return Ok(Some(existing));
                }
                batch.put(Table::Rooms, rk.clone(), &record)?;
                for member in &members {
                    batch.put(
                        Table::Members,
                        member_key(&record.group, &record.room, &member.user),
                        member,
                    )?;
                    batch.put(
                        Table::UserRooms,
                        user_room_key(&member.user, &record.group, &record.room),
                        &record,
                    )?;
                }
                let activity = Activity {
                    members: members.len() as u32,
                    last: None,
                };
                batch.put(Table::Activity, rk, &activity)?;
                Ok(None)
            })();
            match result {
                // The existing room may be this very batch's (two creators at once): answer
                // after the commit, so the caller never looks for a room not yet durable.
                Ok(Some(existing)) => {
                    done.push(Done::Create(tx, CreateOutcome::Exists(existing)));
                }
                Ok(None) => done.push(Done::Create(tx, CreateOutcome::Created)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::DeleteRoom {
            group,
            room,
            done: tx,
        } => {
            let result = (|| {
                let prefix = room_prefix(&group, &room);
                let members: Vec<MemberRecord> = batch.tables.scan(Table::Members, &prefix)?;
                for member in members {
                    batch.remove(Table::Members, member_key(&group, &room, &member.user));
                    batch.remove(Table::UserRooms, user_room_key(&member.user, &group, &room));
                }
                for table in [Table::Messages, Table::Idem, Table::RoomMedia, Table::Mutes] {
                    let keys: Vec<Vec<u8>> = batch
                        .tables
                        .table(table)
                        .prefix(&prefix)
                        .map(|g| g.key().map(|k| k.to_vec()).map_err(io_err))
                        .collect::<StoreResult<_>>()?;
                    for k in keys {
                        if table == Table::RoomMedia {
                            // The key ends with the media id, after the room's prefix.
                            batch.remove(Table::Media, k[prefix.len()..].to_vec());
                        }
                        batch.remove(table, k);
                    }
                }
                batch.remove(Table::Activity, room_key(&group, &room));
                batch.remove(Table::Rooms, room_key(&group, &room));
                Ok(())
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::PutMember {
            group,
            room,
            member,
            done: tx,
        } => {
            let result = (|| {
                let Some(record) =
                    batch.get::<RoomRecord>(Table::Rooms, &room_key(&group, &room))?
                else {
                    return Ok(());
                };
                let mk = member_key(&group, &room, &member.user);
                let existed = batch.get::<MemberRecord>(Table::Members, &mk)?.is_some();
                batch.put(Table::Members, mk, &member)?;
                batch.put(
                    Table::UserRooms,
                    user_room_key(&member.user, &group, &room),
                    &record,
                )?;
                if !existed {
                    let mut activity = activity_of(batch, &group, &room)?;
                    activity.members += 1;
                    batch.put(Table::Activity, room_key(&group, &room), &activity)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
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
                    // A member who leaves takes their mute with them.
                    batch.remove(Table::Mutes, mk.clone());
                    batch.remove(Table::Members, mk);
                    batch.remove(Table::UserRooms, user_room_key(&user, &group, &room));
                    let mut activity = activity_of(batch, &group, &room)?;
                    activity.members = activity.members.saturating_sub(1);
                    batch.put(Table::Activity, room_key(&group, &room), &activity)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::SaveCursors {
            group,
            room,
            cursors,
            done: tx,
        } => {
            let result = (|| {
                for (user, cursor, cursor_seq) in cursors {
                    let mk = member_key(&group, &room, &user);
                    if let Some(mut member) = batch.get::<MemberRecord>(Table::Members, &mk)?
                        && (cursor > member.cursor || cursor_seq > member.cursor_seq)
                    {
                        member.cursor = member.cursor.max(cursor);
                        member.cursor_seq = member.cursor_seq.max(cursor_seq);
                        batch.put(Table::Members, mk, &member)?;
                    }
                }
                Ok(())
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::Append {
            group,
            room,
            msg,
            done: tx,
        } => {
            let result = (|| {
                if let Some(cmid) = &msg.cmid {
                    let ik = idem_key(&group, &room, &msg.from, cmid);
                    if let Some(entry) = batch.get::<IdemEntry>(Table::Idem, &ik)?
                        && now_ms() - entry.ts < IDEMPOTENCY_WINDOW_MS
                        && let Some(first) = batch.get::<StoredMessage>(
                            Table::Messages,
                            &message_key(&group, &room, entry.id),
                        )?
                    {
                        return Ok(AppendOutcome::Duplicate(first));
                    }
                    batch.put(
                        Table::Idem,
                        ik,
                        &IdemEntry {
                            id: msg.id,
                            ts: msg.ts,
                        },
                    )?;
                }
                let mut activity = activity_of(batch, &group, &room)?;
                batch.put(Table::Messages, message_key(&group, &room, msg.id), &msg)?;
                activity.last = Some(msg);
                batch.put(Table::Activity, room_key(&group, &room), &activity)?;
                Ok(AppendOutcome::Stored)
            })();
            match result {
                Ok(AppendOutcome::Stored) => done.push(Done::Append(tx, AppendOutcome::Stored)),
                Ok(duplicate) => {
                    let _ = tx.send(Ok(duplicate));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::Update {
            group,
            room,
            msg,
            done: tx,
        } => {
            let result = (|| {
                let mk = message_key(&group, &room, msg.id);
                let Some(existing) = batch.get::<StoredMessage>(Table::Messages, &mk)? else {
                    return Ok(());
                };
                // Deletion wins: a tombstone is never replaced by a live version.
                if existing.deleted && !msg.deleted {
                    return Ok(());
                }
                batch.put(Table::Messages, mk, &msg)?;
                let mut activity = activity_of(batch, &group, &room)?;
                if activity.last.as_ref().is_some_and(|last| last.id == msg.id) {
                    activity.last = Some(msg);
                    batch.put(Table::Activity, room_key(&group, &room), &activity)?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        WriteOp::PutMedia { media, done: tx } => {
            let result = (|| {
                batch.put(
                    Table::RoomMedia,
                    room_media_key(&media.group, &media.room, &media.id),
                    &(),
                )?;
                batch.put(Table::Media, media.id.as_bytes().to_vec(), &media)
            })();
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
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
            match result {
                Ok(found) => done.push(Done::Bool(tx, found)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
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
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
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
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
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
            match result {
                Ok(()) => done.push(Done::Unit(tx)),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}

/// Deletes idempotency keys older than the window.
fn sweep_idempotency_keys(tables: &Tables) -> StoreResult<usize> {
    let cutoff = now_ms() - IDEMPOTENCY_WINDOW_MS;
    let mut batch = Batch::new(tables);
    for guard in tables.idem.iter() {
        let (k, v) = guard.into_inner().map_err(io_err)?;
        if decode::<IdemEntry>(&v)
            .map(|e| e.ts < cutoff)
            .unwrap_or(true)
        {
            batch.remove(Table::Idem, k.to_vec());
        }
    }
    let swept = batch.overlay.len();
    batch.commit()?;
    Ok(swept)
}

fn writer_loop(tables: Tables, rx: std_mpsc::Receiver<WriteOp>) {
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(op) => op,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= next_sweep {
                    next_sweep = Instant::now() + SWEEP_EVERY;
                    match sweep_idempotency_keys(&tables) {
                        Ok(n) => tracing::debug!(swept = n, "expired idempotency keys removed"),
                        Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
                    }
                }
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let started = Instant::now();
        let mut batch = Batch::new(&tables);
        let mut done = Vec::new();
        let mut count = 1;
        apply(&mut batch, first, &mut done);
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => {
                    apply(&mut batch, op, &mut done);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        let result = batch.commit();
        if let Err(e) = &result {
            tracing::error!(error = %e, "store batch failed; its writes were refused");
        }
        metrics::histogram!("chatnode_store_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("chatnode_store_batch_size").record(count as f64);
        for d in done {
            d.finish(&result);
        }
        // A busy node is never idle for long: sweep between batches too.
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP_EVERY;
            match sweep_idempotency_keys(&tables) {
                Ok(n) => tracing::debug!(swept = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!(error = %e, "idempotency sweep failed"),
            }
        }
    }
    if let Err(e) = tables.db.persist(PersistMode::SyncAll) {
        tracing::error!(error = %e, "final store sync failed");
    }
}

/// The embedded store. Cloning shares it.
pub struct EmbeddedStore {
    tables: Tables,
    writer: std::sync::Mutex<Option<std_mpsc::Sender<WriteOp>>>,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    queue: Arc<Semaphore>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let tables = Tables::open(dir)?;
        let (tx, rx) = std_mpsc::channel();
        let thread_tables = tables.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(thread_tables, rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            tables,
            writer: std::sync::Mutex::new(Some(tx)),
            writer_thread: std::sync::Mutex::new(Some(handle)),
            queue: Arc::new(Semaphore::new(MAX_QUEUED_WRITES)),
        })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> StoreResult<T> {
        let _permit = self.queue.acquire().await.map_err(|_| StoreError::Closed)?;
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
        let tables = self.tables.clone();
        tokio::task::spawn_blocking(move || f(&tables))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|t| t.get::<RoomRecord>(Table::Rooms, b"\0ping").map(|_| ()))
            .await?;
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
        self.write(|done| WriteOp::CreateRoom {
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
        self.write(|done| WriteOp::DeleteRoom { group, room, done })
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
            let Some(record) = t.get::<RoomRecord>(Table::Rooms, &room_key(&group, &room))? else {
                return Ok(None);
            };
            let members = t.scan(Table::Members, &room_prefix(&group, &room))?;
            let page = t.messages_before(&group, &room, None, recent)?;
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
        self.write(|done| WriteOp::PutMember {
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
        self.write(|done| WriteOp::RemoveMember {
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
        self.write(|done| WriteOp::SaveCursors {
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
        let (group, room) = (group.clone(), room.clone());
        self.write(|done| WriteOp::Append {
            group,
            room,
            msg,
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
        self.write(|done| WriteOp::Update {
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
        let mk = message_key(group, room, id);
        self.read(move |t| t.get(Table::Messages, &mk)).await
    }

    async fn messages_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        before: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Page> {
        let (group, room) = (group.clone(), room.clone());
        self.read(move |t| t.messages_before(&group, &room, before, limit))
            .await
    }

    async fn messages_after(
        &self,
        group: &GroupId,
        room: &RoomId,
        since: MessageId,
        limit: usize,
    ) -> StoreResult<Page> {
        let (group, room) = (group.clone(), room.clone());
        self.read(move |t| t.messages_after(&group, &room, since, limit))
            .await
    }

    async fn message_at_or_before(
        &self,
        group: &GroupId,
        room: &RoomId,
        id: MessageId,
    ) -> StoreResult<Option<StoredMessage>> {
        let (group, room) = (group.clone(), room.clone());
        self.read(move |t| {
            let start = message_key(&group, &room, 0);
            let end = message_key(&group, &room, id);
            match t.messages.range(start..=end).next_back() {
                Some(guard) => {
                    let (_, value) = guard.into_inner().map_err(io_err)?;
                    decode(&value).map(Some)
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn chat_list(&self, user: &UserId, group: &GroupId) -> StoreResult<Vec<ChatListEntry>> {
        let (user, group) = (user.clone(), group.clone());
        self.read(move |t| {
            let mut prefix = key(&[user.as_str().as_bytes(), group.as_str().as_bytes()]);
            prefix.push(0);
            let mut out = Vec::new();
            for guard in t.user_rooms.prefix(&prefix) {
                let (_, value) = guard.into_inner().map_err(io_err)?;
                let record: RoomRecord = decode(&value)?;
                let activity = t
                    .get::<Activity>(Table::Activity, &room_key(&group, &record.room))?
                    .unwrap_or_default();
                let member = t.get::<MemberRecord>(
                    Table::Members,
                    &member_key(&group, &record.room, &user),
                )?;
                let last_seq = activity.last.as_ref().map_or(0, |m| m.seq);
                let unread = member.map_or(0, |m| last_seq.saturating_sub(m.cursor_seq));
                out.push(ChatListEntry {
                    record,
                    members: activity.members,
                    last: activity.last,
                    unread,
                });
            }
            out.sort_by_key(|e| {
                std::cmp::Reverse(e.last.as_ref().map_or(e.record.created, |m| m.ts))
            });
            Ok(out)
        })
        .await
    }

    async fn put_media(&self, media: MediaRecord) -> StoreResult<()> {
        self.write(|done| WriteOp::PutMedia { media, done }).await
    }

    async fn get_media(&self, id: &str) -> StoreResult<Option<MediaRecord>> {
        let key = id.as_bytes().to_vec();
        self.read(move |t| t.get(Table::Media, &key)).await
    }

    async fn set_media_thumbnail(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(|done| WriteOp::MarkThumbnail { id, done }).await
    }

    async fn delete_media(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(|done| WriteOp::DeleteMedia { id, done }).await
    }

    async fn put_device(&self, user: &UserId, device: DeviceRecord) -> StoreResult<()> {
        let user = user.clone();
        self.write(|done| WriteOp::PutDevice { user, device, done })
            .await
    }

    async fn delete_device(&self, user: &UserId, token: &str) -> StoreResult<()> {
        let (user, token) = (user.clone(), token.to_owned());
        self.write(|done| WriteOp::DeleteDevice { user, token, done })
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
        self.write(|done| WriteOp::SetMuted {
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
