//! The ordered pipeline of stamped messages waiting for the store. Messages enter in id order
//! (the room stamps them one at a time); the store answers per call, and calls may complete out
//! of order (ScyllaDB writes in parallel). A message is released, to be answered and
//! broadcast, only when it and every message stamped before it have their answers, so clients
//! see `sent` and `msg` strictly in id order.

use std::collections::VecDeque;

use crate::ids::MessageId;
use crate::store::{AppendOutcome, StoreError};

/// The store's answer for one message.
pub type Outcome = Result<AppendOutcome, StoreError>;

struct Entry<T> {
    id: MessageId,
    item: T,
    outcome: Option<Outcome>,
}

/// Stamped messages (with what the room needs to answer them, `T`) in id order.
pub struct Pipeline<T> {
    queue: VecDeque<Entry<T>>,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<T> Pipeline<T> {
    /// Adds a message just stamped with `id`, above every id already in the pipeline.
    pub fn push(&mut self, id: MessageId, item: T) {
        debug_assert!(self.queue.back().is_none_or(|e| e.id < id));
        self.queue.push_back(Entry {
            id,
            item,
            outcome: None,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Files the answer of one store call for the messages `ids` (ascending): one outcome per
    /// id, or the call's error for all. A call that answered a different number of outcomes
    /// is broken, and all of its messages fail rather than be matched by guess.
    pub fn complete(&mut self, ids: &[MessageId], result: Result<Vec<AppendOutcome>, StoreError>) {
        let outcomes: Vec<Outcome> = match result {
            Ok(outcomes) if outcomes.len() == ids.len() => outcomes.into_iter().map(Ok).collect(),
            Ok(outcomes) => {
                let e = StoreError::Corrupt(format!(
                    "{} outcomes for {} appended messages",
                    outcomes.len(),
                    ids.len()
                ));
                vec![Err(e); ids.len()]
            }
            Err(e) => vec![Err(e); ids.len()],
        };
        // Both are in id order: one forward walk files them.
        let mut at = 0;
        for (id, outcome) in ids.iter().zip(outcomes) {
            at += self.queue.range(at..).take_while(|e| e.id < *id).count();
            if let Some(e) = self.queue.get_mut(at).filter(|e| e.id == *id) {
                e.outcome = Some(outcome);
            }
        }
    }

    /// Takes every message out, answered or not (the room stops).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..).map(|e| e.item)
    }

    /// The oldest message, once it and everything before it are answered.
    pub fn pop_ready(&mut self) -> Option<(T, Outcome)> {
        self.queue.front()?.outcome.as_ref()?;
        let entry = self.queue.pop_front()?;
        entry.outcome.map(|outcome| (entry.item, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(p: &mut Pipeline<&'static str>) -> Vec<(&'static str, bool)> {
        std::iter::from_fn(|| p.pop_ready())
            .map(|(item, outcome)| (item, outcome.is_ok()))
            .collect()
    }

    #[test]
    fn later_calls_completing_first_wait_for_the_earlier_ones() {
        let mut p = Pipeline::default();
        for (id, name) in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")] {
            p.push(id, name);
        }
        // Calls {1, 2}, {3}, {4, 5}: the last completes first, then the middle one.
        p.complete(&[4, 5], Ok(vec![AppendOutcome::Stored; 2]));
        assert_eq!(released(&mut p), vec![]);
        p.complete(&[3], Ok(vec![AppendOutcome::Stored]));
        assert_eq!(released(&mut p), vec![]);
        p.complete(&[1, 2], Ok(vec![AppendOutcome::Stored; 2]));
        assert_eq!(
            released(&mut p),
            vec![
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", true),
                ("e", true)
            ]
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_failed_call_fails_its_own_messages_only_and_in_order() {
        let mut p = Pipeline::default();
        for (id, name) in [(10, "a"), (20, "b"), (30, "c")] {
            p.push(id, name);
        }
        p.complete(&[30], Ok(vec![AppendOutcome::Stored]));
        p.complete(&[10, 20], Err(StoreError::Unavailable("down".into())));
        assert_eq!(
            released(&mut p),
            vec![("a", false), ("b", false), ("c", true)]
        );
    }

    #[test]
    fn a_call_answering_the_wrong_number_of_outcomes_fails_all_of_it() {
        let mut p = Pipeline::default();
        p.push(1, "a");
        p.push(2, "b");
        p.complete(&[1, 2], Ok(vec![AppendOutcome::Stored]));
        assert_eq!(released(&mut p), vec![("a", false), ("b", false)]);
    }

    #[test]
    fn released_in_part_as_the_front_completes() {
        let mut p = Pipeline::default();
        p.push(1, "a");
        p.push(2, "b");
        p.complete(&[1], Ok(vec![AppendOutcome::Stored]));
        assert_eq!(released(&mut p), vec![("a", true)]);
        p.push(3, "c");
        p.complete(&[3], Ok(vec![AppendOutcome::Stored]));
        assert_eq!(released(&mut p), vec![]);
        p.complete(&[2], Ok(vec![AppendOutcome::Stored]));
        assert_eq!(released(&mut p), vec![("b", true), ("c", true)]);
    }
}
