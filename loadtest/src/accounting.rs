//! Loss and duplicate accounting. The contract promises every connection a room's `msg` events in
//! increasing id order (docs/protocol.md §3.1), so one connection's view of a room is checked with
//! its last id and a few recent ids, without a set of every id: a repeat of a recent id is a
//! duplicate, an older unseen id is out of order. At the end, what each receiver saw of a room is
//! compared with the messages the room acknowledged.

/// How many recent ids a tally remembers to tell a duplicate from a late message.
const RECENT: usize = 16;

/// What one receiver has seen of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// The highest id seen.
    pub last: u64,
    /// Distinct messages seen (in order or not).
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    recent: [u64; RECENT],
    next: usize,
}

/// What [`Tally::observe`] made of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    OutOfOrder,
}

impl Tally {
    pub fn observe(&mut self, id: u64) -> Seen {
        if id > self.last {
            self.last = id;
            self.unique += 1;
            self.remember(id);
            return Seen::New;
        }
        if id == self.last || self.recent.contains(&id) {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.unique += 1;
        self.out_of_order += 1;
        self.remember(id);
        Seen::OutOfOrder
    }

    fn remember(&mut self, id: u64) {
        self.recent[self.next] = id;
        self.next = (self.next + 1) % RECENT;
    }
}

/// The totals over every receiver of every room.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Integrity {
    /// Deliveries the acknowledged messages call for: each room's acks times its receivers.
    pub expected: u64,
    /// Distinct deliveries received (live and recovered).
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries beyond the expected ones: messages whose `sent` never came back.
    pub unacked_deliveries: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Integrity {
    /// Adds one receiver's tally of a room that acknowledged `acked` messages while the
    /// receiver was a member.
    pub fn add(&mut self, acked: u64, tally: &Tally) {
        self.expected += acked;
        self.received += tally.unique;
        self.lost += acked.saturating_sub(tally.unique);
        self.unacked_deliveries += tally.unique.saturating_sub(acked);
        self.duplicates += tally.duplicates;
        self.out_of_order += tally.out_of_order;
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_ids_are_new() {
        let mut t = Tally::default();
        for id in [10, 20, 35, 1000] {
            assert_eq!(t.observe(id), Seen::New);
        }
        assert_eq!(
            (t.unique, t.duplicates, t.out_of_order, t.last),
            (4, 0, 0, 1000)
        );
    }

    #[test]
    fn repeats_are_duplicates_and_late_ids_are_out_of_order() {
        let mut t = Tally::default();
        t.observe(10);
        t.observe(20);
        t.observe(30);
        assert_eq!(t.observe(30), Seen::Duplicate);
        assert_eq!(t.observe(20), Seen::Duplicate);
        assert_eq!(t.observe(25), Seen::OutOfOrder);
        assert_eq!(t.observe(25), Seen::Duplicate);
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (4, 3, 1));
    }

    #[test]
    fn losses_and_extra_deliveries_are_counted_per_receiver() {
        let mut full = Tally::default();
        let mut short = Tally::default();
        for id in 1..=10 {
            full.observe(id);
            if id % 5 != 0 {
                short.observe(id);
            }
        }
        short.observe(8);
        let mut integrity = Integrity::default();
        integrity.add(10, &full);
        integrity.add(10, &short);
        assert_eq!(integrity.expected, 20);
        assert_eq!(integrity.received, 18);
        assert_eq!(integrity.lost, 2);
        assert_eq!(integrity.duplicates, 1);
        assert!(!integrity.is_clean());

        // One more delivered than acknowledged (a `sent` still in flight) is not a loss.
        let mut extra = Integrity::default();
        extra.add(9, &full);
        assert_eq!((extra.lost, extra.unacked_deliveries), (0, 1));
        assert!(extra.is_clean());
    }
}
