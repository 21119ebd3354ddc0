//! The read cursors of a room's members as a sorted multiset, for unread counts
//! (ARCHITECTURE.md, "Read cursors and unread counts"): `unread(id)` is the number of members
//! whose cursor is below `id`, a binary search.
//!
//! Moving one cursor is a remove and an insert in a sorted `Vec`. When a message is stored,
//! every present member's cursor moves to it at once, and the message is the room's newest, so
//! [`Cursors::advance_to_newest`] moves them all in one pass over the vector instead of one
//! remove and insert each (which in a room of 5,000 present members shifted the vector 5,000
//! times per message).

use crate::ids::MessageId;

#[derive(Debug, Default, Clone)]
pub struct Cursors {
    sorted: Vec<MessageId>,
}

impl Cursors {
    /// From every member's cursor, in any order.
    pub fn new(mut cursors: Vec<MessageId>) -> Self {
        cursors.sort_unstable();
        Self { sorted: cursors }
    }

    /// The number of cursors below `id`.
    pub fn unread(&self, id: MessageId) -> u32 {
        self.sorted.partition_point(|c| *c < id) as u32
    }

    pub fn insert(&mut self, cursor: MessageId) {
        let at = self.sorted.partition_point(|c| *c < cursor);
        self.sorted.insert(at, cursor);
    }

    /// Removes one cursor at `cursor`, if there is one.
    pub fn remove(&mut self, cursor: MessageId) {
        if let Ok(i) = self.sorted.binary_search(&cursor) {
            self.sorted.remove(i);
        }
    }

    /// Moves one cursor from `from` to `to`.
    pub fn replace(&mut self, from: MessageId, to: MessageId) {
        self.remove(from);
        self.insert(to);
    }

    /// Moves one cursor at each of `froms` to `to`. Linear in the number of cursors when `to`
    /// is at least every cursor (the room's newest message); correct for any `to`.
    pub fn advance_to_newest(&mut self, mut froms: Vec<MessageId>, to: MessageId) {
        if froms.is_empty() {
            return;
        }
        froms.sort_unstable();
        // The usual case: the movers were caught up, at the highest cursors (often all at the
        // previous newest message), so they are exactly the vector's tail: O(movers).
        let k = froms.len();
        if k <= self.sorted.len() && self.sorted[self.sorted.len() - k..] == froms[..] {
            let newest = self.sorted.last().is_none_or(|last| *last <= to);
            if newest {
                let keep = self.sorted.len() - k;
                self.sorted.truncate(keep);
                self.sorted.extend(std::iter::repeat_n(to, k));
                return;
            }
        }
        let mut next = 0;
        let mut removed = 0;
        // Both are sorted: drop one occurrence of each value of `froms` in a single pass.
        self.sorted.retain(|c| {
            while next < froms.len() && froms[next] < *c {
                next += 1; // not present (cannot happen while callers keep the invariant)
            }
            if next < froms.len() && froms[next] == *c {
                next += 1;
                removed += 1;
                false
            } else {
                true
            }
        });
        let newest = self.sorted.last().is_none_or(|last| *last <= to);
        self.sorted.extend(std::iter::repeat_n(to, removed));
        if !newest {
            self.sorted.sort_unstable();
        }
    }

    pub fn clear(&mut self) {
        self.sorted.clear();
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious model: a plain list, counted each time.
    fn naive_unread(list: &[MessageId], id: MessageId) -> u32 {
        list.iter().filter(|c| **c < id).count() as u32
    }

    #[test]
    fn counts_cursors_below_an_id() {
        let c = Cursors::new(vec![5, 1, 3, 3, 9]);
        assert_eq!(c.unread(0), 0);
        assert_eq!(c.unread(3), 1);
        assert_eq!(c.unread(4), 3);
        assert_eq!(c.unread(10), 5);
    }

    #[test]
    fn advancing_many_matches_one_at_a_time() {
        // A small deterministic generator, so the test needs no crate and never flakes.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let members = 1 + rand(60) as usize;
            let start: Vec<MessageId> = (0..members).map(|_| rand(50)).collect();
            let mut fast = Cursors::new(start.clone());
            let mut model = start.clone();
            // Either the newest id (the message just stored) or, now and then, an older one.
            let to = if round % 5 == 0 {
                rand(60)
            } else {
                100 + rand(10)
            };
            let movers: Vec<usize> = if round % 3 == 1 {
                // The members at the highest cursors (caught up, present): the tail path.
                let mut by_cursor: Vec<usize> = (0..members).collect();
                by_cursor.sort_by_key(|&i| model[i]);
                let k = 1 + rand(members as u64) as usize;
                by_cursor[members - k..].to_vec()
            } else {
                (0..members).filter(|_| rand(3) > 0).collect()
            };
            let froms: Vec<MessageId> = movers
                .iter()
                .map(|&i| model[i])
                .filter(|from| *from < to)
                .collect();
            for &i in &movers {
                if model[i] < to {
                    model[i] = to;
                }
            }
            fast.advance_to_newest(froms, to);
            assert_eq!(fast.len(), model.len());
            for id in 0..=120 {
                assert_eq!(
                    fast.unread(id),
                    naive_unread(&model, id),
                    "round {round}, id {id}"
                );
            }
        }
    }

    #[test]
    fn caught_up_movers_and_others_both_count_right() {
        let mut c = Cursors::new(vec![3, 10, 10, 5, 10]);
        // The three caught up at 10 are the tail: they move to 11.
        c.advance_to_newest(vec![10, 10, 10], 11);
        assert_eq!(
            (c.unread(5), c.unread(6), c.unread(11), c.unread(12)),
            (1, 2, 2, 5)
        );
        // 3 and one 11 are not the tail [11, 11]: the general pass.
        c.advance_to_newest(vec![11, 3], 12);
        assert_eq!(
            (c.unread(5), c.unread(6), c.unread(12), c.unread(13)),
            (0, 1, 3, 5)
        );
        // One of two members at 12 moves: its value is the tail, whichever of the two it was.
        c.advance_to_newest(vec![12], 13);
        assert_eq!((c.unread(12), c.unread(13), c.unread(14)), (3, 4, 5));
    }

    #[test]
    fn insert_remove_and_replace_keep_the_order() {
        let mut c = Cursors::new(vec![]);
        for x in [7, 2, 9, 2] {
            c.insert(x);
        }
        c.replace(2, 8);
        c.remove(9);
        c.remove(42); // absent: nothing happens
        assert_eq!(c.sorted, vec![2, 7, 8]);
        c.clear();
        assert!(c.is_empty());
    }
}
