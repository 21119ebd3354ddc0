//! The embedded store's open tables, shared by readers and the writer, and their reopening
//! after a failed write.
//!
//! fjall poisons its whole database when a journal write or sync fails (a full disk, an I/O
//! error): from then on it refuses every write until the database is opened again
//! (`fjall::Error::Poisoned`: "let the application crash and try to recover"; recovery is the
//! reopening, which replays the journal up to its last whole batch and cuts off the rest).
//!
//! A failed batch may still become durable: its last bytes wait in fjall's journal buffer,
//! which fjall writes out when the database is closed, and by then the disk may have room
//! again. So the writer does not answer a failed batch at once. It closes and reopens the
//! tables right away, then reads the number of the last durable batch (`\0batch` in
//! `room_numbers`, written by every batch of the writer): the failed batch's callers hear
//! `Ok` if their batch made it and `unavailable` if not, so `unavailable` always means "not
//! stored". A synced probe of 64 KiB then shows whether the store takes writes again; until it
//! does, the writer reopens again at growing intervals and refuses every write meanwhile.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::PersistMode;

use super::{Done, Tables, WriteOp, io_err};
use crate::ids::now_ms;
use crate::store::{StoreError, StoreResult};

/// `room_numbers` key of the number of the writer's last durable batch (8 bytes, big endian;
/// a room key never starts with `\0`, and nothing scans `room_numbers`).
pub(super) const LAST_BATCH: &[u8] = b"\0batch";
/// `room_numbers` key the writer's probe writes after reopening, and how much.
const PROBE: &[u8] = b"\0probe";
const PROBE_BYTES: usize = 64 * 1024;
/// How long a reopening waits for readers to let go of the old tables.
const READERS_WAIT: Duration = Duration::from_secs(5);
/// The shortest and longest wait between two reopenings of a store that refuses writes.
const REOPEN_MIN: Duration = Duration::from_millis(200);
const REOPEN_MAX: Duration = Duration::from_secs(5);
/// How long the callers of a failed batch wait for its outcome when the tables cannot be
/// opened again; then they hear `unavailable`, although their batch may yet be replayed.
const HOLD_MAX: Duration = Duration::from_secs(10);

/// The open tables (`None` while the writer reopens them), and why writes are refused, if
/// they are (readiness reports it).
pub(super) struct Shared {
    dir: PathBuf,
    tables: RwLock<Option<Arc<Tables>>>,
    refusing: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn open(dir: PathBuf) -> StoreResult<Self> {
        let tables = Tables::open(&dir)?;
        Ok(Self {
            dir,
            tables: RwLock::new(Some(Arc::new(tables))),
            refusing: Mutex::new(None),
        })
    }

    /// `Err` with the reason while writes are refused.
    pub(super) fn health(&self) -> StoreResult<()> {
        match &*self.refusing.lock().map_err(|_| StoreError::Closed)? {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// Notes whether writes are refused, and why.
    fn set_refusing(&self, why: Option<&str>) {
        if let Ok(mut refusing) = self.refusing.lock() {
            *refusing = why.map(|why| format!("the store refuses writes: {why}"));
        }
    }

    /// The tables now open, for one read or one writer session.
    pub(super) fn tables(&self) -> StoreResult<Arc<Tables>> {
        self.tables
            .read()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is being reopened".into()))
    }

    /// Closes the tables and opens them again (fjall replays its journal). Only the writer
    /// calls this, so nothing writes meanwhile; readers wait at most [`READERS_WAIT`].
    fn reopen(&self) -> StoreResult<Arc<Tables>> {
        let old = self.tables.write().map_err(|_| StoreError::Closed)?.take();
        if let Some(old) = old {
            // Readers clone the `Arc` for one read each: they let go soon.
            let deadline = Instant::now() + READERS_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if Arc::strong_count(&old) > 1 {
                *self.tables.write().map_err(|_| StoreError::Closed)? = Some(old);
                return Err(StoreError::Unavailable(
                    "readers still hold the store; it is reopened later".into(),
                ));
            }
            // The last handle: fjall writes out its journal buffer, stops its workers and
            // releases its lock here.
            drop(old);
        }
        let tables = Arc::new(Tables::open(&self.dir)?);
        *self.tables.write().map_err(|_| StoreError::Closed)? = Some(tables.clone());
        Ok(tables)
    }
}

/// The number of the writer's last durable batch (0 before the first).
pub(super) fn last_batch(tables: &Tables) -> StoreResult<u64> {
    match tables.numbers.get(LAST_BATCH).map_err(io_err)? {
        Some(bytes) => {
            let raw: [u8; 8] = bytes[..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("the batch number is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(raw))
        }
        None => Ok(0),
    }
}

/// A batch whose commit failed: its number, why, and the answers it holds back.
pub(super) struct Failed {
    pub(super) batch: u64,
    pub(super) why: String,
    pub(super) done: Vec<Done>,
}

impl Failed {
    /// Answers the batch's callers: `Ok` if it is durable in `tables` after all.
    fn settle(self, tables: &Tables) {
        let durable = match last_batch(tables) {
            Ok(last) => last >= self.batch,
            Err(e) => {
                tracing::error!(error = %e, "the outcome of a failed batch is unknown");
                false
            }
        };
        let result = if durable {
            tracing::warn!("a batch that failed to sync was durable after all; answered as stored");
            Ok(())
        } else {
            Err(StoreError::Unavailable(self.why))
        };
        for d in self.done {
            d.finish(&result);
        }
    }
}

/// Reopens the tables after `failed`, answers its callers once its outcome is known, and
/// returns the tables once a synced probe succeeds. Writes that arrive meanwhile are refused.
/// `None` when the store was closed meanwhile.
pub(super) fn recover(
    shared: &Shared,
    rx: &std_mpsc::Receiver<WriteOp>,
    failed: Failed,
) -> Option<Arc<Tables>> {
    let since = Instant::now();
    shared.set_refusing(Some(&failed.why));
    let mut why;
    let mut failed = Some(failed);
    let mut wait = REOPEN_MIN;
    loop {
        match shared.reopen() {
            Ok(tables) => {
                if let Some(failed) = failed.take() {
                    failed.settle(&tables);
                }
                match probe(&tables) {
                    Ok(()) => {
                        shared.set_refusing(None);
                        tracing::warn!("the store was reopened and takes writes again");
                        return Some(tables);
                    }
                    Err(e) => why = e.reason(),
                }
            }
            Err(e) => why = e.reason(),
        }
        shared.set_refusing(Some(&why));
        tracing::warn!(reason = %why, "the store refuses writes; it is reopened again later");
        if since.elapsed() >= HOLD_MAX
            && let Some(failed) = failed.take()
        {
            tracing::error!("a failed batch is answered unavailable before its outcome is known");
            for d in failed.done {
                d.finish(&Err(StoreError::Unavailable(why.clone())));
            }
        }
        if !refuse_for(rx, wait, &why) {
            if let Some(failed) = failed.take() {
                for d in failed.done {
                    d.finish(&Err(StoreError::Closed));
                }
            }
            return None;
        }
        wait = (wait * 2).min(REOPEN_MAX);
    }
}

/// A synced write of [`PROBE_BYTES`] that do not compress: `Ok` when the store takes writes.
/// A tiny probe could fit in the journal's last, partly used page of a disk that is still
/// full, and the store would flap between ready and refusing.
fn probe(tables: &Tables) -> StoreResult<()> {
    let mut x = u64::try_from(now_ms()).unwrap_or(1) | 1;
    let noise: Vec<u8> = (0..PROBE_BYTES / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let mut probe = tables.db.batch().durability(Some(PersistMode::SyncAll));
    probe.insert(&tables.numbers, PROBE, noise);
    probe.commit().map_err(io_err)
}

/// Answers every write that arrives within `wait` with `unavailable`, without applying it.
/// `false` when the store was closed.
fn refuse_for(rx: &std_mpsc::Receiver<WriteOp>, wait: Duration, why: &str) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match rx.recv_timeout(left) {
            Ok(op) => op.refuse(StoreError::Unavailable(format!(
                "the store refuses writes: {why}"
            ))),
            Err(std_mpsc::RecvTimeoutError::Timeout) => return true,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{Batch, Table};

    /// Settles a failed batch numbered `batch` against tables whose last durable batch is
    /// `last`; what its caller hears.
    fn settled(last: u64, batch: u64) -> StoreResult<()> {
        let dir = tempfile::tempdir().expect("dir");
        let tables = Tables::open(dir.path()).expect("open");
        let mut committed = Batch::new(&tables);
        committed.put_raw(Table::Rooms, b"k".to_vec(), b"v".to_vec());
        committed.commit_numbered(Some(last)).expect("commit");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let failed = Failed {
            batch,
            why: "disk full".into(),
            done: vec![Done::Unit(tx)],
        };
        failed.settle(&tables);
        rx.blocking_recv().expect("answered")
    }

    #[test]
    fn a_failed_batch_that_became_durable_is_answered_as_stored() {
        assert!(settled(7, 7).is_ok());
    }

    #[test]
    fn a_failed_batch_that_did_not_become_durable_is_refused() {
        let err = settled(6, 7).expect_err("refused");
        assert!(
            matches!(err, StoreError::Unavailable(ref why) if why == "disk full"),
            "{err}"
        );
    }
}
