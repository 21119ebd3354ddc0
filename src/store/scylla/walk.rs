//! The bucket walk: history that crosses bucket boundaries, written once over a
//! [`BucketSource`] so that it can be tested without a cluster.
//!
//! A room's messages live in one partition per time bucket, and the room keeps an index of the
//! buckets it has written to (`message_buckets`, highest first). A page of history walks that
//! index from the bucket of its bound towards older (or newer) buckets, reading each bucket for
//! the messages still wanted, and stops when it has enough or when the index ends: the lowest
//! indexed bucket is the room's first bucket, so a walk never goes past it and never reads a
//! bucket that holds nothing (a room quiet for a year costs one index read, not 7,500 empty
//! partition reads).

use std::future::Future;

use super::buckets::{Bucket, bucket_of_i64};
use crate::store::{StoreResult, StoredMessage};

/// Which way a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards smaller ids; messages come newest first.
    Older,
    /// Towards larger ids; messages come oldest first.
    Newer,
}

/// Which ids a walk wants (ids are bigints as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `id < x`, walking older.
    Below(i64),
    /// `id <= x`, walking older.
    AtMost(i64),
    /// `id > x`, walking newer.
    Above(i64),
}

impl Bound {
    pub fn direction(self) -> Direction {
        match self {
            Self::Below(_) | Self::AtMost(_) => Direction::Older,
            Self::Above(_) => Direction::Newer,
        }
    }

    /// The bucket where the walk begins, or `None` when no id can match.
    pub fn start_bucket(self) -> Option<Bucket> {
        match self {
            Self::Below(x) => (x > 0).then(|| bucket_of_i64(x - 1)),
            Self::AtMost(x) => (x >= 0).then(|| bucket_of_i64(x)),
            Self::Above(x) => (x < i64::MAX).then(|| bucket_of_i64(x.saturating_add(1).max(0))),
        }
    }

    /// Whether `id` is wanted.
    pub fn admits(self, id: i64) -> bool {
        match self {
            Self::Below(x) => id < x,
            Self::AtMost(x) => id <= x,
            Self::Above(x) => id > x,
        }
    }
}

/// How many bucket numbers one index read asks for.
pub const INDEX_BATCH: usize = 32;

/// Where a walk reads from: the bucket index and the buckets themselves.
pub trait BucketSource {
    /// At most `n` indexed buckets of the room, starting at `from` (inclusive) and going in
    /// `direction`, in walk order.
    fn buckets(
        &self,
        from: Bucket,
        direction: Direction,
        n: usize,
    ) -> impl Future<Output = StoreResult<Vec<Bucket>>> + Send;

    /// At most `n` messages of `bucket` admitted by `bound`, in walk order.
    fn messages(
        &self,
        bucket: Bucket,
        bound: Bound,
        n: usize,
    ) -> impl Future<Output = StoreResult<Vec<StoredMessage>>> + Send;
}

/// Collects up to `want` messages admitted by `bound`, in walk order (newest first when walking
/// older). Callers ask for one more than a page to learn whether more exist.
pub async fn walk<S: BucketSource + Sync>(
    source: &S,
    bound: Bound,
    want: usize,
) -> StoreResult<Vec<StoredMessage>> {
    let mut out: Vec<StoredMessage> = Vec::new();
    if want == 0 {
        return Ok(out);
    }
    let direction = bound.direction();
    let Some(mut from) = bound.start_bucket() else {
        return Ok(out);
    };
    loop {
        let buckets = source.buckets(from, direction, INDEX_BATCH).await?;
        let mut last = None;
        for bucket in buckets.iter().copied() {
            // Only buckets strictly on the way: a source that repeats or goes back could
            // otherwise keep the walk going forever.
            let on_the_way = match direction {
                Direction::Older => bucket <= from && last.is_none_or(|l| bucket < l),
                Direction::Newer => bucket >= from && last.is_none_or(|l| bucket > l),
            };
            if !on_the_way {
                continue;
            }
            last = Some(bucket);
            let msgs = source.messages(bucket, bound, want - out.len()).await?;
            out.extend(
                msgs.into_iter()
                    .filter(|m| i64::try_from(m.id).is_ok_and(|id| bound.admits(id))),
            );
            if out.len() >= want {
                out.truncate(want);
                return Ok(out);
            }
        }
        // A short answer means the index has no more buckets this way: the room's first (or
        // latest) bucket has been read.
        let Some(last) = last else { break };
        if buckets.len() < INDEX_BATCH {
            break;
        }
        from = match direction {
            Direction::Older if last > 0 => last - 1,
            Direction::Newer if last < Bucket::MAX => last + 1,
            _ => break,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::ids::UserId;
    use crate::protocol::MessageKind;
    use crate::store::scylla::buckets::{bucket_of, first_id, last_id};

    /// Bucket contents in memory, counting the reads made against them.
    #[derive(Default)]
    struct Fake {
        buckets: BTreeMap<Bucket, Vec<u64>>,
        index_reads: Mutex<usize>,
        bucket_reads: Mutex<Vec<Bucket>>,
    }

    fn msg(id: u64) -> StoredMessage {
        StoredMessage {
            id,
            seq: id,
            from: UserId::parse("u").unwrap_or_else(|_| unreachable!()),
            kind: MessageKind::Text,
            text: None,
            media: None,
            ts: 0,
            cmid: None,
            edited: None,
            deleted: false,
        }
    }

    impl Fake {
        fn with(ids: &[u64]) -> Self {
            let mut fake = Self::default();
            for &id in ids {
                fake.buckets.entry(bucket_of(id)).or_default().push(id);
            }
            fake
        }

        /// An indexed bucket whose messages were never written.
        fn with_empty(mut self, bucket: Bucket) -> Self {
            self.buckets.entry(bucket).or_default();
            self
        }

        fn reads(&self) -> Vec<Bucket> {
            self.bucket_reads
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default()
        }
    }

    impl BucketSource for Fake {
        async fn buckets(
            &self,
            from: Bucket,
            direction: Direction,
            n: usize,
        ) -> StoreResult<Vec<Bucket>> {
            if let Ok(mut reads) = self.index_reads.lock() {
                *reads += 1;
            }
            Ok(match direction {
                Direction::Older => self
                    .buckets
                    .range(..=from)
                    .rev()
                    .map(|(b, _)| *b)
                    .take(n)
                    .collect(),
                Direction::Newer => self
                    .buckets
                    .range(from..)
                    .map(|(b, _)| *b)
                    .take(n)
                    .collect(),
            })
        }

        async fn messages(
            &self,
            bucket: Bucket,
            bound: Bound,
            n: usize,
        ) -> StoreResult<Vec<StoredMessage>> {
            if let Ok(mut reads) = self.bucket_reads.lock() {
                reads.push(bucket);
            }
            let mut ids: Vec<u64> = self
                .buckets
                .get(&bucket)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|id| bound.admits(*id as i64))
                .collect();
            ids.sort_unstable();
            if bound.direction() == Direction::Older {
                ids.reverse();
            }
            Ok(ids.into_iter().take(n).map(msg).collect())
        }
    }

    fn ids(msgs: &[StoredMessage]) -> Vec<u64> {
        msgs.iter().map(|m| m.id).collect()
    }

    #[tokio::test]
    async fn a_page_crosses_bucket_boundaries_newest_first() {
        let b = |bucket: i64, k: u64| first_id(bucket) + k;
        let fake = Fake::with(&[b(0, 1), b(0, 2), b(3, 1), b(3, 2), b(3, 3), b(7, 1)]);
        let got = walk(&fake, Bound::AtMost(i64::MAX), 4).await.expect("walk");
        assert_eq!(ids(&got), vec![b(7, 1), b(3, 3), b(3, 2), b(3, 1)]);
        let got = walk(&fake, Bound::Below(b(3, 2) as i64), 10)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![b(3, 1), b(0, 2), b(0, 1)]);
        // Never reads a bucket that is not indexed (1, 2, 4, 5, 6 hold nothing).
        assert!(
            fake.reads().iter().all(|r| [0, 3, 7].contains(r)),
            "{:?}",
            fake.reads()
        );
    }

    #[tokio::test]
    async fn walking_newer_goes_oldest_first() {
        let b = |bucket: i64, k: u64| first_id(bucket) + k;
        let fake = Fake::with(&[b(0, 1), b(2, 1), b(2, 9), b(9, 4)]);
        let got = walk(&fake, Bound::Above(b(0, 1) as i64), 10)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![b(2, 1), b(2, 9), b(9, 4)]);
        let got = walk(&fake, Bound::Above(b(2, 1) as i64), 1)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![b(2, 9)]);
        let got = walk(&fake, Bound::Above(i64::MAX), 5).await.expect("walk");
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn the_walk_stops_at_the_first_bucket() {
        // A room whose only messages are a year apart: two buckets indexed, thousands between.
        let early = first_id(10) + 1;
        let late = first_id(10 + 7_500) + 1;
        let fake = Fake::with(&[early, late]);
        let got = walk(&fake, Bound::AtMost(i64::MAX), 50)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![late, early]);
        assert_eq!(fake.reads(), vec![10 + 7_500, 10]);
        assert_eq!(fake.index_reads.lock().map(|r| *r).unwrap_or(0), 1);
        // Before the first message there is nothing, and nothing is read below bucket 10.
        let got = walk(&fake, Bound::Below(early as i64), 50)
            .await
            .expect("walk");
        assert!(got.is_empty());
        assert!(fake.reads().iter().all(|b| *b >= 10));
    }

    #[tokio::test]
    async fn many_buckets_are_paged_through_the_index() {
        let ids_in: Vec<u64> = (0..100).map(|b| first_id(b * 3) + 7).collect();
        let fake = Fake::with(&ids_in).with_empty(1).with_empty(500);
        let got = walk(&fake, Bound::AtMost(i64::MAX), 1_000)
            .await
            .expect("walk");
        let mut expected = ids_in.clone();
        expected.reverse();
        assert_eq!(ids(&got), expected);
        // 102 indexed buckets in batches of 32: four index reads.
        assert_eq!(fake.index_reads.lock().map(|r| *r).unwrap_or(0), 4);
        let got = walk(&fake, Bound::Above(-1), 1_000).await.expect("walk");
        assert_eq!(ids(&got), ids_in);
    }

    #[tokio::test]
    async fn edges_of_the_bounds() {
        let fake = Fake::with(&[0, 5, last_id(0), first_id(1)]);
        assert!(
            walk(&fake, Bound::Below(0), 5)
                .await
                .expect("walk")
                .is_empty()
        );
        assert_eq!(
            ids(&walk(&fake, Bound::AtMost(0), 5).await.expect("walk")),
            vec![0]
        );
        assert_eq!(
            ids(&walk(&fake, Bound::Below(5), 5).await.expect("walk")),
            vec![0]
        );
        let got = walk(&fake, Bound::AtMost(last_id(0) as i64), 5)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![last_id(0), 5, 0]);
        let got = walk(&fake, Bound::Above(last_id(0) as i64), 5)
            .await
            .expect("walk");
        assert_eq!(ids(&got), vec![first_id(1)]);
        assert!(
            walk(&fake, Bound::AtMost(-3), 5)
                .await
                .expect("walk")
                .is_empty()
        );
        assert!(
            walk(&fake, Bound::AtMost(i64::MAX), 0)
                .await
                .expect("walk")
                .is_empty()
        );
    }

    /// A source that misbehaves (repeats its buckets) cannot make the walk loop forever.
    struct Stuck;

    impl BucketSource for Stuck {
        async fn buckets(&self, _: Bucket, _: Direction, n: usize) -> StoreResult<Vec<Bucket>> {
            Ok(vec![4; n])
        }

        async fn messages(&self, _: Bucket, _: Bound, _: usize) -> StoreResult<Vec<StoredMessage>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_misbehaving_index_still_ends() {
        let got = walk(&Stuck, Bound::AtMost(i64::MAX), 10)
            .await
            .expect("walk");
        assert!(got.is_empty());
        let got = walk(&Stuck, Bound::Above(0), 10).await.expect("walk");
        assert!(got.is_empty());
    }
}
