//! Which idempotency keys `room_idem` may hold: a Bloom filter the writer keeps, so that most
//! appends skip the lookup of their `cmid` in fjall.
//!
//! Almost every `cmid` is new, and finding that out from fjall means a search of the memtable
//! and a bloom probe of every table: a quarter of the writer's time, and appends sustained
//! about a fifth more without it (docs/benchmarks.md, "The idempotency filter"). The filter
//! answers "certainly not stored" for nearly all of them; only a key it may hold (one that is
//! stored, or one in [`FALSE_POSITIVES`] of the others) is looked up.
//!
//! The writer is the only one who writes `room_idem`, so the filter stays complete: it is
//! built from the keyspace when the store opens and again at every sweep of expired keys
//! (which reads every key anyway), and the writer adds each key it writes. Keys deleted
//! (expired, or with their room) stay in the filter until the next rebuild, which only costs
//! a lookup. A filter holding more keys than it was sized for answers "may hold" more often,
//! never wrongly "not stored"; the hourly rebuild sizes it again. Until the first build, and
//! if a build fails, [`IdemFilter::unknown`] sends every key to fjall, as before the filter.

use std::hash::BuildHasher;

use fastbloom::BloomFilter;

/// The share of keys not stored that the filter still sends to fjall, at its sized load.
pub(super) const FALSE_POSITIVES: f64 = 0.01;
/// The fewest keys a filter is sized for (1.2 MB at [`FALSE_POSITIVES`]).
pub(super) const MIN_KEYS: usize = 1 << 20;
/// The most memory the filters take together (about 55 million keys at [`FALSE_POSITIVES`]:
/// an hour of 15,000 messages a second between two sweeps). Past it the filter gives up until
/// the next rebuild, and every key is looked up again, as without it.
pub(super) const MAX_BYTES: usize = 64 << 20;

/// One Bloom filter of the chain and the keys it was sized for and holds.
struct Link {
    bloom: BloomFilter,
    capacity: usize,
    held: usize,
}

impl Link {
    fn new(capacity: usize) -> Self {
        let bloom = BloomFilter::with_false_pos(FALSE_POSITIVES).expected_items(capacity);
        Self {
            bloom,
            capacity,
            held: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.bloom.num_bits() / 8
    }
}

/// A chain of Bloom filters: keys go into the newest, which, once it holds as many keys as it
/// was sized for, is followed by one twice its size, so the false positives stay near
/// [`FALSE_POSITIVES`] however many keys come between two rebuilds. A lookup asks each link
/// (one hash of the key serves them all); a rebuild makes one link again.
pub(super) struct IdemFilter {
    /// `None`: unknown, every key may be stored.
    chain: Option<Vec<Link>>,
    hasher: foldhash::quality::RandomState,
    /// [`MAX_BYTES`], smaller in tests.
    max_bytes: usize,
}

impl IdemFilter {
    /// A filter that knows nothing: every key may be stored.
    pub(super) fn unknown() -> Self {
        Self {
            chain: None,
            hasher: Default::default(),
            max_bytes: MAX_BYTES,
        }
    }

    /// An empty filter with room for `keys` keys (at least [`MIN_KEYS`]) in its first link.
    pub(super) fn sized_for(keys: usize) -> Self {
        Self::limited(keys, MAX_BYTES)
    }

    fn limited(keys: usize, max_bytes: usize) -> Self {
        // About 1.2 bytes a key at 1 % false positives.
        let first = Link::new(keys.clamp(MIN_KEYS, max_bytes * 8 / 10));
        Self {
            chain: Some(vec![first]),
            hasher: Default::default(),
            max_bytes,
        }
    }

    /// Whether `key` may be in `room_idem`. `false` means it is certainly not.
    pub(super) fn may_hold(&self, key: &[u8]) -> bool {
        let Some(chain) = &self.chain else {
            return true;
        };
        let hash = self.hasher.hash_one(key);
        chain.iter().any(|link| link.bloom.contains_hash(hash))
    }

    /// Notes that `key` is (or is about to be) in `room_idem`.
    pub(super) fn insert(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let Some(chain) = &mut self.chain else {
            return;
        };
        if let Some(last) = chain.last().filter(|l| l.held >= l.capacity) {
            let link = Link::new(2 * last.capacity);
            let bytes: usize = chain.iter().map(Link::bytes).sum();
            if bytes + link.bytes() > self.max_bytes {
                tracing::info!(
                    bytes,
                    "idempotency filter full: every cmid is looked up until the next sweep"
                );
                self.chain = None;
                self.report_size();
                return;
            }
            chain.push(link);
            self.report_size();
        }
        if let Some(link) = self.chain.as_mut().and_then(|chain| chain.last_mut()) {
            link.bloom.insert_hash(hash);
            link.held += 1;
        }
    }

    /// The memory the filter takes, in bytes (0 when unknown).
    fn bytes(&self) -> usize {
        self.chain
            .as_ref()
            .map_or(0, |chain| chain.iter().map(Link::bytes).sum())
    }

    /// Sets `chatnode_store_idem_filter_bytes` (when the writer takes a rebuilt filter, and when
    /// its filter grows or gives up).
    pub(super) fn report_size(&self) {
        metrics::gauge!("chatnode_store_idem_filter_bytes").set(self.bytes() as f64);
    }

    /// How many links the chain has (0 when unknown).
    #[cfg(test)]
    fn links(&self) -> usize {
        self.chain.as_ref().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        let mut k = 7u64.to_be_bytes().to_vec();
        k.extend_from_slice(format!("user-{}\0cmid-{i}", i % 50).as_bytes());
        k
    }

    /// Puts the keys numbered `keys` in.
    fn fill(filter: &mut IdemFilter, keys: std::ops::Range<u64>) {
        for i in keys {
            filter.insert(&key(i));
        }
    }

    /// How many of the keys numbered `keys` the filter may hold.
    fn held(filter: &IdemFilter, keys: std::ops::Range<u64>) -> usize {
        keys.filter(|&i| filter.may_hold(&key(i))).count()
    }

    #[test]
    fn every_key_put_in_is_held_and_few_others_are() {
        let mut filter = IdemFilter::sized_for(10_000);
        fill(&mut filter, 0..10_000);
        assert_eq!(held(&filter, 0..10_000), 10_000);
        let others = held(&filter, 10_000..110_000);
        // Sized for a million keys and holding ten thousand: far under the 1 % it allows.
        assert!(
            others < 1_000,
            "{others} of 100,000 keys not put in were held"
        );
    }

    #[test]
    fn a_filter_past_its_size_grows_a_link_and_stays_selective() {
        let mut filter = IdemFilter::sized_for(0);
        let n = 3 * MIN_KEYS as u64;
        fill(&mut filter, 0..n);
        // 1 Mi keys in the first link, 2 Mi in the second.
        assert_eq!(filter.links(), 2);
        assert_eq!(held(&filter, 0..n), n as usize);
        let others = held(&filter, n..n + 100_000);
        assert!(
            others < 3_000,
            "{others} of 100,000 keys not put in were held"
        );
    }

    #[test]
    fn a_filter_that_would_outgrow_its_memory_gives_up() {
        // Room for the first link (1.2 MB) but not for the second (2.4 MB more).
        let mut filter = IdemFilter::limited(0, 3 << 20);
        fill(&mut filter, 0..MIN_KEYS as u64);
        assert_eq!(filter.links(), 1);
        filter.insert(&key(u64::MAX));
        assert_eq!(filter.links(), 0);
        assert!(filter.may_hold(b"anything"));
    }

    #[test]
    fn an_unknown_filter_holds_everything() {
        let mut filter = IdemFilter::unknown();
        filter.insert(&key(1));
        assert!(filter.may_hold(&key(1)) && filter.may_hold(&key(2)));
    }
}
