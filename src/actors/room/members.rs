//! The room's members and their read cursors: who belongs, where each has read to (the id
//! and the room's message count up to it), the sorted cursors that make a message's unread
//! count one binary search ([`Cursors`]), and which cursors moved since they were last saved.
//!
//! Cursors only move forward. A move reports where the cursor was, so the room can send the
//! receipt (`read {from, to}`) that lowers the counts of the messages in between.

use super::cursors::Cursors;
use crate::ids::{MessageId, UserId};
use crate::store::MemberRecord;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A member's read cursor: the last message read, and the room's count up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub id: MessageId,
    pub seq: u64,
}

#[derive(Default)]
pub struct Members {
    cursors_of: HashMap<UserId, Cursor>,
    /// Every member's cursor id, sorted: unread(id) = cursors below id.
    sorted: Cursors,
    /// Members whose cursor moved since the last [`take_moved`](Self::take_moved).
    moved: HashSet<UserId>,
}

impl Members {
    /// From the members as loaded.
    pub fn new(records: Vec<MemberRecord>) -> Self {
        let mut cursors_of = HashMap::with_capacity_and_hasher(records.len(), Default::default());
        let mut sorted = Vec::with_capacity(records.len());
        for m in records {
            sorted.push(m.cursor);
            cursors_of.insert(
                m.user,
                Cursor {
                    id: m.cursor,
                    seq: m.cursor_seq,
                },
            );
        }
        Self {
            cursors_of,
            sorted: Cursors::new(sorted),
            moved: HashSet::default(),
        }
    }

    pub fn contains(&self, user: &UserId) -> bool {
        self.cursors_of.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.cursors_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cursors_of.is_empty()
    }

    pub fn cursor(&self, user: &UserId) -> Option<Cursor> {
        self.cursors_of.get(user).copied()
    }

    /// Every member with their cursor, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&UserId, &Cursor)> {
        self.cursors_of.iter()
    }

    pub fn users(&self) -> impl Iterator<Item = &UserId> {
        self.cursors_of.keys()
    }

    /// The number of members whose cursor is below `id`: the message's unread count.
    pub fn unread(&self, id: MessageId) -> u32 {
        self.sorted.unread(id)
    }

    /// `user`'s unread count when the room has `last_seq` messages; `None` for a non-member.
    pub fn unread_of(&self, user: &UserId, last_seq: u64) -> Option<u64> {
        self.cursors_of
            .get(user)
            .map(|c| last_seq.saturating_sub(c.seq))
    }

    /// Adds a member whose cursor is at `cursor` (a member already there is replaced).
    pub fn insert(&mut self, user: UserId, cursor: Cursor) {
        if let Some(old) = self.cursors_of.insert(user, cursor) {
            self.sorted.remove(old.id);
        }
        self.sorted.insert(cursor.id);
    }

    /// Removes a member; their unsaved cursor move is forgotten with them.
    pub fn remove(&mut self, user: &UserId) {
        if let Some(cursor) = self.cursors_of.remove(user) {
            self.sorted.remove(cursor.id);
        }
        self.moved.remove(user);
    }

    /// Moves `user`'s cursor forward to `to`; returns where it was when it moved.
    pub fn advance(&mut self, user: &UserId, to: Cursor) -> Option<MessageId> {
        let from = self.move_one(user, to)?;
        self.sorted.replace(from, to.id);
        Some(from)
    }

    /// Moves the cursors of `readers` (who are present, or just sent it) to the room's newest
    /// message `to`, in one pass over the sorted cursors. Returns those whose cursor was below
    /// `caught_up` (the message before `to`): they skipped unread messages and get a receipt.
    pub fn advance_to_newest<'a>(
        &mut self,
        readers: impl IntoIterator<Item = &'a UserId>,
        to: Cursor,
        caught_up: MessageId,
    ) -> Vec<(UserId, MessageId)> {
        let mut froms = Vec::new();
        let mut behind = Vec::new();
        for user in readers {
            if let Some(from) = self.move_one(user, to) {
                froms.push(from);
                if from < caught_up {
                    behind.push((user.clone(), from));
                }
            }
        }
        self.sorted.advance_to_newest(froms, to.id);
        behind
    }

    /// The cursors moved since the last call, to be saved.
    pub fn take_moved(&mut self) -> Vec<(UserId, MessageId, u64)> {
        let Self {
            moved, cursors_of, ..
        } = self;
        moved
            .drain()
            .filter_map(|u| cursors_of.get(&u).map(|c| (u.clone(), c.id, c.seq)))
            .collect()
    }

    /// Moves one cursor without touching the sorted ones; returns the old id when it moved.
    fn move_one(&mut self, user: &UserId, to: Cursor) -> Option<MessageId> {
        let cursor = self.cursors_of.get_mut(user)?;
        if to.id <= cursor.id {
            return None;
        }
        let from = cursor.id;
        cursor.id = to.id;
        cursor.seq = cursor.seq.max(to.seq);
        if !self.moved.contains(user) {
            self.moved.insert(user.clone());
        }
        Some(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("id")
    }

    fn at(id: MessageId) -> Cursor {
        Cursor { id, seq: id / 10 }
    }

    /// alice read up to 30, bob to 10, carol to 0 (nothing).
    fn room() -> Members {
        let record = |name: &str, cursor: MessageId| MemberRecord {
            user: user(name),
            cursor,
            cursor_seq: cursor / 10,
            joined: 0,
        };
        Members::new(vec![
            record("alice", 30),
            record("bob", 10),
            record("carol", 0),
        ])
    }

    #[test]
    fn unread_counts_follow_the_cursors() {
        let m = room();
        assert_eq!(m.unread(10), 1, "only carol has not read 10");
        assert_eq!(m.unread(20), 2);
        assert_eq!(m.unread(40), 3);
        assert_eq!(m.unread_of(&user("bob"), 4), Some(3));
        assert_eq!(m.unread_of(&user("dave"), 4), None);
    }

    #[test]
    fn cursors_only_move_forward_and_report_where_they_were() {
        let mut m = room();
        assert_eq!(m.advance(&user("bob"), at(5)), None, "backwards");
        assert_eq!(m.advance(&user("bob"), at(10)), None, "in place");
        assert_eq!(m.advance(&user("bob"), at(30)), Some(10));
        assert_eq!(m.unread(20), 1);
        assert_eq!(m.advance(&user("dave"), at(30)), None, "not a member");
        assert_eq!(m.take_moved(), vec![(user("bob"), 30, 3)]);
        assert_eq!(m.take_moved(), vec![], "saved once");
    }

    #[test]
    fn readers_of_the_newest_message_get_receipts_only_for_what_they_skipped() {
        let mut m = room();
        // Message 40 is stored; the one before it is 30. alice had read 30 (no receipt: the
        // `msg` itself tells her), bob and carol are present and skipped unread ones; dave is
        // not a member.
        let readers = [
            user("alice"),
            user("bob"),
            user("carol"),
            user("dave"),
            user("bob"),
        ];
        let mut behind = m.advance_to_newest(&readers, at(40), 30);
        behind.sort();
        assert_eq!(behind, vec![(user("bob"), 10), (user("carol"), 0)]);
        assert_eq!(m.unread(40), 0);
        assert_eq!(m.unread(41), 3);
        let mut moved = m.take_moved();
        moved.sort();
        assert_eq!(moved.len(), 3);
        assert!(moved.iter().all(|(_, id, seq)| (*id, *seq) == (40, 4)));
    }

    #[test]
    fn a_removed_members_cursor_counts_no_more() {
        let mut m = room();
        m.advance(&user("carol"), at(20));
        m.remove(&user("carol"));
        assert_eq!(m.unread(10), 0);
        assert_eq!(m.take_moved(), vec![], "her move is not saved");
        m.insert(user("erin"), at(30));
        assert_eq!(m.unread(31), 3);
        assert_eq!(m.len(), 3);
    }
}
