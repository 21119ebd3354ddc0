//! Moves a data directory from the named layout to numbered rooms, once, when the store opens.
//!
//! Before room numbers, a room's messages were filed under `group\0room\0` + id in the keyspace
//! `messages`, and its idempotency keys under `group\0room\0user\0cmid` in `idem`. Every key
//! comparison in the memtable then went through both names, which costs a fifth of the append
//! rate when names are as long as UUIDs (docs/benchmarks.md). Now each room has a number
//! (`room_numbers`), and its keys in `room_messages` and `room_idem` begin with it.
//!
//! The move copies every key of the old keyspaces into the new ones, giving rooms their numbers
//! as it meets them, in synced batches; each batch also holds the numbers it gave, so a move
//! that stops half way (a crash) is simply done again on the next start: the numbers already
//! given are reused and the keys already copied are copied once more. An old keyspace is
//! deleted only after all of it has been copied and synced.

use fjall::{Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use super::{HashMap, NEXT_ROOM_NO, RoomNo, Tables, io_err};
use crate::store::{StoreError, StoreResult};

/// The keyspaces of the named layout.
const OLD_MESSAGES: &str = "messages";
const OLD_IDEM: &str = "idem";
/// Keys copied per synced batch.
const CHUNK: usize = 10_000;

/// Moves what the named layout left behind, if anything. Runs before the writer starts.
pub(super) fn named_keys(tables: &Tables) -> StoreResult<()> {
    let db = &tables.db;
    if !db.keyspace_exists(OLD_MESSAGES) && !db.keyspace_exists(OLD_IDEM) {
        return Ok(());
    }
    tracing::info!("moving the store to numbered room keys (once; an interrupted move resumes)");
    let mut numbers = Numbers::load(tables)?;
    let mut moved = [0usize; 2];
    for (i, (name, new, split)) in [
        (OLD_MESSAGES, &tables.messages, split_message_key as Split),
        (OLD_IDEM, &tables.idem, split_idem_key as Split),
    ]
    .into_iter()
    .enumerate()
    {
        if !db.keyspace_exists(name) {
            continue;
        }
        let old = db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(io_err)?;
        moved[i] = copy(tables, &old, new, split, &mut numbers)?;
        db.delete_keyspace(old).map_err(io_err)?;
    }
    tracing::info!(
        messages = moved[0],
        idempotency_keys = moved[1],
        rooms = numbers.by_room.len(),
        "store moved to numbered room keys"
    );
    Ok(())
}

/// Splits an old key into its room key (`group\0room`) and what follows the room in the new
/// key; `None` when the key is not of the old layout.
type Split = fn(&[u8]) -> Option<(&[u8], &[u8])>;

/// `group\0room\0` + id (8 bytes): the room key, and the id.
fn split_message_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = key.len().checked_sub(9)?;
    (at > 0 && key[at] == 0).then(|| (&key[..at], &key[at + 1..]))
}

/// `group\0room\0user\0cmid`: the room key, and `user\0cmid`.
fn split_idem_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let group_end = key.iter().position(|b| *b == 0)?;
    let room_end = group_end + 1 + key[group_end + 1..].iter().position(|b| *b == 0)?;
    Some((&key[..room_end], &key[room_end + 1..]))
}

/// Copies every key of `old` into `new` under its room's number; returns how many.
fn copy(
    tables: &Tables,
    old: &Keyspace,
    new: &Keyspace,
    split: Split,
    numbers: &mut Numbers,
) -> StoreResult<usize> {
    let mut batch = tables.db.batch().durability(Some(PersistMode::SyncAll));
    let mut in_batch = 0;
    let mut copied = 0;
    for guard in old.iter() {
        let (key, value) = guard.into_inner().map_err(io_err)?;
        let Some((room_key, rest)) = split(&key) else {
            return Err(StoreError::Corrupt(format!(
                "a key of the old layout cannot be read: {key:02x?}"
            )));
        };
        let number = numbers.number(tables, &mut batch, room_key);
        let mut new_key = Vec::with_capacity(8 + rest.len());
        new_key.extend_from_slice(&number.prefix());
        new_key.extend_from_slice(rest);
        batch.insert(new, new_key, value);
        in_batch += 1;
        copied += 1;
        if in_batch == CHUNK {
            batch.commit().map_err(io_err)?;
            batch = tables.db.batch().durability(Some(PersistMode::SyncAll));
            in_batch = 0;
        }
    }
    batch.commit().map_err(io_err)?;
    Ok(copied)
}

/// The rooms' numbers while moving: those given before (an earlier, interrupted move) and
/// those given now.
struct Numbers {
    by_room: HashMap<Vec<u8>, RoomNo>,
    next: u64,
}

impl Numbers {
    fn load(tables: &Tables) -> StoreResult<Self> {
        let mut by_room = HashMap::default();
        let mut next = 1;
        for guard in tables.numbers.iter() {
            let (key, value) = guard.into_inner().map_err(io_err)?;
            let number = RoomNo::from_bytes(&value)?;
            if &*key == NEXT_ROOM_NO {
                next = next.max(number.0);
            } else {
                next = next.max(number.0 + 1);
                by_room.insert(key.to_vec(), number);
            }
        }
        Ok(Self { by_room, next })
    }

    /// The room's number; a new one is written into `batch` with the next number to give.
    fn number(&mut self, tables: &Tables, batch: &mut OwnedWriteBatch, room_key: &[u8]) -> RoomNo {
        if let Some(number) = self.by_room.get(room_key) {
            return *number;
        }
        let number = RoomNo(self.next);
        self.next += 1;
        batch.insert(
            &tables.numbers,
            room_key.to_vec(),
            number.to_bytes().to_vec(),
        );
        batch.insert(
            &tables.numbers,
            NEXT_ROOM_NO.to_vec(),
            RoomNo(self.next).to_bytes().to_vec(),
        );
        self.by_room.insert(room_key.to_vec(), number);
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_split_into_room_and_rest() {
        let mut message = b"team\0general\0".to_vec();
        message.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            split_message_key(&message),
            Some((&b"team\0general"[..], &7u64.to_be_bytes()[..]))
        );
        assert_eq!(
            split_idem_key(b"team\0general\0alice\0c-1"),
            Some((&b"team\0general"[..], &b"alice\0c-1"[..]))
        );
        assert_eq!(split_message_key(b"short"), None);
        assert_eq!(split_idem_key(b"team\0general"), None);
    }
}
