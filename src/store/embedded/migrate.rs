//! Moves a data directory from the named layout to numbered rooms, once, when the store opens.
//!
//! Before room numbers, a room's messages were filed under `group\0room\0` + id in the keyspace
//! `messages`, and its idempotency keys under `group\0room\0user\0cmid` in `idem`. Every key
//! comparison in the memtable then went through both names, which costs a fifth of the append
//! rate when names are as long as UUIDs (docs/benchmarks.md). Now each room has a number
//! (`room_numbers`), and its keys in `room_messages` and `room_idem` begin with it.
//!
//! The move copies every key of the old keyspaces into the new ones, giving rooms their numbers
//! as it meets them, in synced batches of the writer's kind ([`Batch`]); each batch also holds
//! the numbers it gave, so a move that stops half way (a crash) is simply done again on the
//! next start: the numbers already given are reused and the keys already copied are copied
//! once more. An old keyspace is
//! deleted only after all of it has been copied and synced.

use fjall::{Keyspace, KeyspaceCreateOptions};

use super::{Batch, Table, Tables, io_err};
use crate::store::{StoreError, StoreResult};

/// The keyspaces of the named layout.
const OLD_MESSAGES: &str = "messages";
const OLD_IDEM: &str = "idem";
/// Keys copied per synced batch.
const CHUNK: usize = 10_000;

/// Moves what the named layout left behind, if anything. Runs before the writer starts, with a
/// batch of the writer's kind: it gives rooms their numbers as the writer does.
pub(super) fn named_keys(tables: &Tables) -> StoreResult<()> {
    let db = &tables.db;
    if !db.keyspace_exists(OLD_MESSAGES) && !db.keyspace_exists(OLD_IDEM) {
        return Ok(());
    }
    tracing::info!("moving the store to numbered room keys (once; an interrupted move resumes)");
    let mut batch = Batch::new(tables);
    let mut moved = [0usize; 2];
    for (i, (name, table, split)) in [
        (OLD_MESSAGES, Table::Messages, split_message_key as Split),
        (OLD_IDEM, Table::Idem, split_idem_key as Split),
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
        moved[i] = copy(&mut batch, &old, table, split)?;
        db.delete_keyspace(old).map_err(io_err)?;
    }
    tracing::info!(
        messages = moved[0],
        idempotency_keys = moved[1],
        rooms = batch.numbers.len(),
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

/// Copies every key of `old` into `table` under its room's number, committing (and syncing)
/// every [`CHUNK`] keys with the numbers given for them; returns how many.
fn copy(batch: &mut Batch<'_>, old: &Keyspace, table: Table, split: Split) -> StoreResult<usize> {
    let mut copied = 0;
    let mut new_key = Vec::new();
    for guard in old.iter() {
        let (key, value) = guard.into_inner().map_err(io_err)?;
        let Some((room_key, rest)) = split(&key) else {
            return Err(StoreError::Corrupt(format!(
                "a key of the old layout cannot be read: {key:02x?}"
            )));
        };
        let number = batch
            .number(room_key, true)?
            .ok_or_else(|| StoreError::Corrupt("no room number given".into()))?;
        new_key.clear();
        new_key.extend_from_slice(&number.prefix());
        new_key.extend_from_slice(rest);
        batch.put_slices(table, &new_key, &value);
        copied += 1;
        if batch.len() >= CHUNK {
            batch.commit()?;
        }
    }
    batch.commit()?;
    Ok(copied)
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
