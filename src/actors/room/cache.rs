//! The room's history cache: its latest durable messages, oldest first, at most a configured
//! number, and whether they are the room's whole history. `enter`, `history` and `read` are
//! answered from it when it covers what they ask, so a busy room's readers cost no store read.

use std::collections::VecDeque;
use std::collections::vec_deque::Iter;

use crate::ids::MessageId;
use crate::store::StoredMessage;

pub struct HistoryCache {
    msgs: VecDeque<StoredMessage>,
    cap: usize,
    /// True while `msgs` holds the room's whole history.
    complete: bool,
}

impl HistoryCache {
    /// From the room's latest messages as loaded, oldest first: fewer than `cap` of them are
    /// the whole history.
    pub fn new(recent: Vec<StoredMessage>, cap: usize) -> Self {
        Self {
            complete: recent.len() < cap,
            msgs: recent.into(),
            cap,
        }
    }

    /// Adds the room's newest message, forgetting the oldest beyond the cap.
    pub fn push(&mut self, msg: StoredMessage) {
        self.msgs.push_back(msg);
        while self.msgs.len() > self.cap {
            self.msgs.pop_front();
            self.complete = false;
        }
    }

    /// The seq of the latest message with id <= `id`, when the cache can tell (0 when no
    /// message is that old and the cache is the whole history).
    pub fn seq_at(&self, id: MessageId) -> Option<u64> {
        let front = self.msgs.front()?;
        if id < front.id {
            return self.complete.then_some(0);
        }
        let at = self.msgs.partition_point(|m| m.id <= id);
        at.checked_sub(1)
            .and_then(|i| self.msgs.get(i))
            .map(|m| m.seq)
    }

    /// The room's newest message, when it has one.
    pub fn newest(&self) -> Option<&StoredMessage> {
        self.msgs.back()
    }

    /// A cached message by id.
    pub fn get(&self, id: MessageId) -> Option<&StoredMessage> {
        let at = self.msgs.partition_point(|m| m.id < id);
        self.msgs.get(at).filter(|m| m.id == id)
    }

    pub fn get_mut(&mut self, id: MessageId) -> Option<&mut StoredMessage> {
        let at = self.msgs.partition_point(|m| m.id < id);
        self.msgs.get_mut(at).filter(|m| m.id == id)
    }

    /// The last `limit` messages below `before` (or the latest), oldest first, and whether older
    /// ones exist; `None` when the cache does not hold them all.
    pub fn before(
        &self,
        before: Option<MessageId>,
        limit: usize,
    ) -> Option<(Iter<'_, StoredMessage>, bool)> {
        let end = match before {
            Some(b) => self.msgs.partition_point(|m| m.id < b),
            None => self.msgs.len(),
        };
        if end < limit && !self.complete {
            return None;
        }
        let start = end.saturating_sub(limit);
        let more = start > 0 || !self.complete;
        Some((self.msgs.range(start..end), more))
    }

    /// The first `limit` messages above `since`, oldest first, and whether newer ones remain;
    /// `None` when the cache does not reach back to `since`. `last_id` is the room's newest
    /// message (a cache that keeps nothing still knows that nothing is newer than it).
    pub fn after(
        &self,
        since: MessageId,
        limit: usize,
        last_id: MessageId,
    ) -> Option<(Iter<'_, StoredMessage>, bool)> {
        let covered = self.complete
            || self
                .msgs
                .front()
                .is_some_and(|front| since.saturating_add(1) >= front.id)
            || self.msgs.is_empty() && last_id <= since;
        if !covered {
            return None;
        }
        let start = self.msgs.partition_point(|m| m.id <= since);
        let end = (start + limit).min(self.msgs.len());
        Some((self.msgs.range(start..end), end < self.msgs.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::protocol::MessageKind;

    fn msg(id: MessageId) -> StoredMessage {
        StoredMessage {
            id,
            seq: id / 10,
            from: UserId::parse("alice").expect("id"),
            kind: MessageKind::Text,
            text: Some(format!("m{id}")),
            media: None,
            ts: 0,
            cmid: None,
            edited: None,
            deleted: false,
        }
    }

    fn ids<'a>(page: impl Iterator<Item = &'a StoredMessage>) -> Vec<MessageId> {
        page.map(|m| m.id).collect()
    }

    /// Ids 10, 20, ..., 10 * n, loaded as the room's latest into a cache of `cap`.
    fn cache(n: u64, cap: usize) -> HistoryCache {
        HistoryCache::new((1..=n).map(|i| msg(i * 10)).collect(), cap)
    }

    #[test]
    fn a_complete_cache_answers_every_page_and_says_where_history_begins() {
        let c = cache(5, 10);
        let (page, more) = c.before(None, 3).expect("cached");
        assert_eq!((ids(page), more), (vec![30, 40, 50], true));
        let (page, more) = c.before(Some(30), 3).expect("cached");
        assert_eq!((ids(page), more), (vec![10, 20], false));
        let (page, more) = c.before(Some(10), 3).expect("cached");
        assert_eq!((ids(page), more), (vec![], false));
        // A `before` between ids, and one above the newest.
        let (page, _) = c.before(Some(35), 2).expect("cached");
        assert_eq!(ids(page), vec![20, 30]);
        let (page, _) = c.before(Some(999), 2).expect("cached");
        assert_eq!(ids(page), vec![40, 50]);
    }

    #[test]
    fn a_partial_cache_refuses_pages_it_cannot_fill() {
        // Eight messages into a cache of five: 40..80 kept, older ones in the store only.
        let mut c = cache(3, 5);
        for i in 4..=8 {
            c.push(msg(i * 10));
        }
        let (page, more) = c.before(None, 5).expect("exactly the cache");
        assert_eq!((ids(page), more), (vec![40, 50, 60, 70, 80], true));
        assert!(c.before(None, 6).is_none(), "one more than it holds");
        assert!(c.before(Some(50), 2).is_none(), "only 40 is below 50 here");
        let (page, more) = c.before(Some(70), 3).expect("40, 50, 60");
        assert_eq!((ids(page), more), (vec![40, 50, 60], true));
    }

    #[test]
    fn since_reads_are_answered_only_when_the_cache_reaches_back() {
        let mut c = cache(3, 3);
        c.push(msg(40));
        // 20..40 kept. Nothing can lie between 19 and 20; between 5 and 20 the store may hold
        // messages the cache dropped (ids are not dense).
        let (page, more) = c.after(19, 2, 40).expect("covered");
        assert_eq!((ids(page), more), (vec![20, 30], true));
        let (page, more) = c.after(30, 5, 40).expect("covered");
        assert_eq!((ids(page), more), (vec![40], false));
        assert!(c.after(5, 5, 40).is_none());
        let (page, more) = c.after(40, 5, 40).expect("nothing newer");
        assert_eq!((ids(page), more), (vec![], false));
        // A cache that keeps nothing still answers "nothing newer" for the newest id.
        let none = HistoryCache::new(vec![], 0);
        assert!(none.after(7, 5, 7).is_some());
        assert!(none.after(6, 5, 7).is_none());
    }

    #[test]
    fn seqs_and_lookups_by_id() {
        let mut c = cache(2, 2);
        c.push(msg(30));
        assert_eq!(c.seq_at(25), Some(2), "the latest at or before 25 is 20");
        assert_eq!(c.seq_at(30), Some(3));
        assert_eq!(c.seq_at(10), None, "10 fell out of a partial cache");
        assert_eq!(cache(2, 5).seq_at(5), Some(0), "older than a whole history");
        assert!(c.get(20).is_some() && c.get(25).is_none());
        if let Some(m) = c.get_mut(30) {
            m.deleted = true;
        }
        assert!(c.get(30).is_some_and(|m| m.deleted));
    }
}
