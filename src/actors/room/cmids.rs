//! The room's recent `cmid`s: for each (sender, cmid) of the last sends, either the id it was
//! stored under or, while its first send is in flight, the duplicates waiting for its answer.
//! A duplicate is answered with the first send's id without touching the store, and one that
//! arrives while the first is in flight gets the same answer when it comes. The store's own
//! idempotency check covers what this bounded memory has forgotten.

use std::collections::VecDeque;

use crate::ids::{MessageId, UserId};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// (sender, cmid)
pub type CmidKey = (UserId, String);

pub enum CmidState<W> {
    /// The first send is in flight; these duplicates wait for its answer.
    InFlight(Vec<W>),
    Done {
        id: MessageId,
        ts: i64,
    },
}

/// What a send finds for its cmid.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Stored as `id` at `ts` within the idempotency window: answer that.
    Done { id: MessageId, ts: i64 },
    /// The first send is in flight: [`wait`](RecentCmids::wait) for its answer.
    InFlight,
    /// New (or forgotten, or older than the window): the send goes on.
    New,
}

/// The last `cap` cmids of a room (never forgetting one in flight), with waiters of type `W`.
pub struct RecentCmids<W> {
    states: HashMap<CmidKey, CmidState<W>>,
    order: VecDeque<CmidKey>,
    cap: usize,
}

impl<W> RecentCmids<W> {
    pub fn new(cap: usize) -> Self {
        Self {
            states: HashMap::default(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Looks a send's cmid up at `now_ms`: an answer stored within `window_ms` is reused.
    pub fn lookup(&self, key: &CmidKey, now_ms: i64, window_ms: i64) -> Seen {
        match self.states.get(key) {
            Some(CmidState::Done { id, ts }) if now_ms - *ts < window_ms => {
                Seen::Done { id: *id, ts: *ts }
            }
            Some(CmidState::InFlight(_)) => Seen::InFlight,
            _ => Seen::New,
        }
    }

    /// A duplicate of a send in flight waits for its answer; returns it back when `key` is
    /// not in flight.
    pub fn wait(&mut self, key: &CmidKey, waiter: W) -> Result<(), W> {
        match self.states.get_mut(key) {
            Some(CmidState::InFlight(waiters)) => {
                waiters.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    pub fn contains(&self, key: &CmidKey) -> bool {
        self.states.contains_key(key)
    }

    /// Marks a send in flight (duplicates will wait for it).
    pub fn start(&mut self, key: CmidKey) {
        self.remember(key, CmidState::InFlight(Vec::new()));
    }

    /// The send of `key` was stored as `id`; returns the duplicates that waited for it.
    pub fn finish(&mut self, key: CmidKey, id: MessageId, ts: i64) -> Vec<W> {
        let waiters = self.take_waiters(&key);
        self.remember(key, CmidState::Done { id, ts });
        waiters
    }

    /// The send of `key` failed: it is forgotten, and its waiters are returned to be told.
    pub fn fail(&mut self, key: &CmidKey) -> Vec<W> {
        let waiters = self.take_waiters(key);
        self.states.remove(key);
        waiters
    }

    fn take_waiters(&mut self, key: &CmidKey) -> Vec<W> {
        match self.states.get_mut(key) {
            Some(CmidState::InFlight(waiters)) => std::mem::take(waiters),
            _ => Vec::new(),
        }
    }

    fn remember(&mut self, key: CmidKey, state: CmidState<W>) {
        if self.states.insert(key.clone(), state).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.states.get(&old) {
                Some(CmidState::InFlight(_)) => {
                    // Never forget a send in flight; it goes to the back.
                    self.order.push_back(old);
                    break;
                }
                Some(CmidState::Done { .. }) => {
                    self.states.remove(&old);
                }
                // Failed sends leave their key in `order` only.
                None => {}
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i64 = 1000;

    fn key(cmid: &str) -> CmidKey {
        (UserId::parse("alice").expect("id"), cmid.to_owned())
    }

    #[test]
    fn a_duplicate_in_flight_waits_for_the_first_answer() {
        let mut c: RecentCmids<&str> = RecentCmids::new(10);
        assert_eq!(c.lookup(&key("a"), 0, WINDOW), Seen::New);
        assert_eq!(
            c.wait(&key("a"), "early"),
            Err("early"),
            "nothing to wait for"
        );
        c.start(key("a"));
        assert_eq!(c.lookup(&key("a"), 1, WINDOW), Seen::InFlight);
        assert_eq!(c.wait(&key("a"), "second"), Ok(()));
        assert_eq!(c.wait(&key("a"), "third"), Ok(()));
        assert_eq!(c.finish(key("a"), 77, 5), vec!["second", "third"]);
        assert_eq!(c.lookup(&key("a"), 6, WINDOW), Seen::Done { id: 77, ts: 5 });
        assert_eq!(c.wait(&key("a"), "late"), Err("late"), "answered already");
        // Other senders' equal cmids are theirs.
        let bob = (UserId::parse("bob").expect("id"), "a".to_owned());
        assert_eq!(c.lookup(&bob, 6, WINDOW), Seen::New);
    }

    #[test]
    fn a_failed_send_tells_its_waiters_and_is_forgotten() {
        let mut c: RecentCmids<u8> = RecentCmids::new(10);
        c.start(key("a"));
        assert_eq!(c.wait(&key("a"), 2), Ok(()));
        assert_eq!(c.fail(&key("a")), vec![2]);
        assert_eq!(c.lookup(&key("a"), 0, WINDOW), Seen::New);
    }

    #[test]
    fn answers_expire_with_the_window() {
        let mut c: RecentCmids<u8> = RecentCmids::new(10);
        c.start(key("a"));
        c.finish(key("a"), 9, 100);
        assert_eq!(
            c.lookup(&key("a"), 100 + WINDOW - 1, WINDOW),
            Seen::Done { id: 9, ts: 100 }
        );
        assert_eq!(c.lookup(&key("a"), 100 + WINDOW, WINDOW), Seen::New);
    }

    #[test]
    fn the_oldest_answers_are_forgotten_but_never_a_send_in_flight() {
        let mut c: RecentCmids<u8> = RecentCmids::new(3);
        c.start(key("slow"));
        for (i, k) in ["b", "c", "d", "e"].into_iter().enumerate() {
            c.start(key(k));
            c.finish(key(k), i as u64, 0);
        }
        assert!(c.contains(&key("slow")), "in flight");
        assert!(!c.contains(&key("b")), "the oldest answer went");
        assert!(c.contains(&key("e")));
        assert!(c.len() <= 4, "bounded: {}", c.len());
        c.finish(key("slow"), 99, 0);
        for k in ["f", "g", "h"] {
            c.start(key(k));
            c.finish(key(k), 1, 0);
        }
        assert!(
            !c.contains(&key("slow")),
            "answered, then forgotten in turn"
        );
        assert!(c.len() <= 3);
    }
}
