//! Who is present in the room: each user with their connections in it (a user is present
//! until their last connection leaves), and the `typing` throttle (at most one forwarded per
//! user per interval). The clock is passed in, so the rules are tested without waiting.

use std::time::{Duration, Instant};

use crate::ids::UserId;
use crate::session::handle::SessionId;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub struct Presence {
    present: HashMap<UserId, Vec<SessionId>>,
    /// When each present user's last forwarded `typing` was.
    typing: HashMap<UserId, Instant>,
    typing_interval: Duration,
}

impl Presence {
    pub fn new(typing_interval: Duration) -> Self {
        Self {
            present: HashMap::default(),
            typing: HashMap::default(),
            typing_interval,
        }
    }

    pub fn contains(&self, user: &UserId) -> bool {
        self.present.contains_key(user)
    }

    /// How many users are present.
    pub fn count(&self) -> usize {
        self.present.len()
    }

    pub fn users(&self) -> impl Iterator<Item = &UserId> {
        self.present.keys()
    }

    /// `user`'s connections in the room.
    pub fn sessions_of(&self, user: &UserId) -> Vec<SessionId> {
        self.present.get(user).cloned().unwrap_or_default()
    }

    /// A connection of `user` entered; true when it made them present.
    pub fn arrive(&mut self, user: &UserId, session: SessionId) -> bool {
        match self.present.get_mut(user) {
            Some(sessions) => {
                if !sessions.contains(&session) {
                    sessions.push(session);
                }
                false
            }
            None => {
                self.present.insert(user.clone(), vec![session]);
                true
            }
        }
    }

    /// A connection of `user` left; true when it was their last (they are absent now).
    pub fn leave(&mut self, user: &UserId, session: SessionId) -> bool {
        let Some(sessions) = self.present.get_mut(user) else {
            return false;
        };
        sessions.retain(|s| *s != session);
        if !sessions.is_empty() {
            return false;
        }
        self.present.remove(user);
        self.typing.remove(user);
        true
    }

    /// Everyone leaves at once (the room stops); returns how many were present.
    pub fn clear(&mut self) -> usize {
        let n = self.present.len();
        self.present.clear();
        self.typing.clear();
        n
    }

    /// `user` typed at `now`: true when it is forwarded (none of theirs within the interval).
    pub fn typed(&mut self, user: &UserId, now: Instant) -> bool {
        if self
            .typing
            .get(user)
            .is_some_and(|last| now.saturating_duration_since(*last) < self.typing_interval)
        {
            return false;
        }
        self.typing.insert(user.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("id")
    }

    #[test]
    fn a_user_is_present_until_their_last_connection_leaves() {
        let mut p = Presence::new(Duration::from_secs(2));
        let alice = user("alice");
        assert!(p.arrive(&alice, SessionId(1)));
        assert!(!p.arrive(&alice, SessionId(2)), "already present");
        assert!(!p.arrive(&alice, SessionId(2)), "the same connection again");
        assert!(!p.leave(&alice, SessionId(1)));
        assert!(p.contains(&alice));
        assert!(
            !p.leave(&alice, SessionId(9)),
            "a connection that never came"
        );
        assert!(p.leave(&alice, SessionId(2)), "the last one");
        assert!(!p.contains(&alice));
        assert!(!p.leave(&alice, SessionId(2)), "gone already");
        assert_eq!(p.count(), 0);
    }

    #[test]
    fn typing_is_forwarded_once_per_interval_per_user() {
        let mut p = Presence::new(Duration::from_secs(2));
        let (alice, bob) = (user("alice"), user("bob"));
        let t0 = Instant::now();
        assert!(p.typed(&alice, t0));
        assert!(!p.typed(&alice, t0 + Duration::from_millis(1999)));
        assert!(
            p.typed(&bob, t0 + Duration::from_millis(1999)),
            "bob's own throttle"
        );
        assert!(p.typed(&alice, t0 + Duration::from_secs(2)));
        // Leaving resets it: typing right after coming back is shown.
        p.arrive(&alice, SessionId(1));
        p.leave(&alice, SessionId(1));
        assert!(p.typed(&alice, t0 + Duration::from_millis(2001)));
    }
}
