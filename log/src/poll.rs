//! Poll semantics shared by every backend: limit clamping, the byte budget and the returned
//! cursor. A backend supplies events in seq order; [`BatchBuilder`] decides where the batch ends.

use crate::event::Event;

/// The most events one poll returns unless configured otherwise.
pub const DEFAULT_MAX_EVENTS: u32 = 10_000;

/// The most payload bytes one poll returns unless configured otherwise: 4 MiB.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

/// Host-side bounds on one poll, so that a caller cannot make the host allocate without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PollLimits {
    /// A requested limit above this is lowered to it.
    pub max_events: u32,
    /// A batch ends once its payload bytes reach this, and before an event that would take them
    /// past it; the first event is always returned whole, so that progress never stalls.
    pub max_bytes: usize,
}

impl Default for PollLimits {
    fn default() -> Self {
        PollLimits {
            max_events: DEFAULT_MAX_EVENTS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The answer to a poll: the events after `since`, and the cursor to pass next time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Events in ascending seq order, without gaps.
    pub events: Vec<Event>,
    /// The seq of the last event in `events`, or the `since` asked for if there are none.
    pub last_seq: u64,
}

/// Accumulates one batch under a requested limit and [`PollLimits`].
#[derive(Debug)]
pub struct BatchBuilder {
    max_events: usize,
    max_bytes: usize,
    bytes: usize,
    batch: Batch,
}

impl BatchBuilder {
    /// Starts a batch of the events after `since`, asked for with `limit`.
    pub fn new(since: u64, limit: u32, limits: &PollLimits) -> Self {
        let max_events = limit.min(limits.max_events) as usize;
        BatchBuilder {
            max_events,
            max_bytes: limits.max_bytes,
            bytes: 0,
            batch: Batch {
                // The clamp bounds this allocation; a small limit costs a small batch.
                events: Vec::with_capacity(max_events.min(1024)),
                last_seq: since,
            },
        }
    }

    /// The first seq a backend should read, or `None` if nothing is to be read: the limit is 0,
    /// or `since` is `u64::MAX` and nothing can follow it.
    pub fn first_wanted(&self) -> Option<u64> {
        if self.is_full() {
            return None;
        }
        self.batch.last_seq.checked_add(1)
    }

    /// Whether the batch has reached its event limit.
    pub fn is_full(&self) -> bool {
        self.batch.events.len() >= self.max_events
    }

    /// Whether the batch holds no event yet.
    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// Offers the next event in seq order; it is left out if the batch is full or its payload
    /// would take the batch past the byte budget. Returns whether the batch can take more: once
    /// it returns `false` the backend should stop reading.
    pub fn push(&mut self, event: Event) -> bool {
        if self.is_full() {
            return false;
        }
        let bytes = self.bytes.saturating_add(event.change.payload.len());
        if bytes > self.max_bytes && !self.is_empty() {
            return false;
        }
        self.bytes = bytes;
        self.batch.last_seq = event.seq;
        self.batch.events.push(event);
        // A spent budget ends the batch here rather than after decoding one more event.
        !self.is_full() && self.bytes < self.max_bytes
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Change, ChangeKind};

    fn event(seq: u64, payload_len: usize) -> Event {
        Event {
            seq,
            change: Change::new(ChangeKind::Updated, 1, 2).with_payload(vec![0; payload_len]),
        }
    }

    fn limits(max_events: u32, max_bytes: usize) -> PollLimits {
        PollLimits {
            max_events,
            max_bytes,
        }
    }

    #[test]
    fn limit_zero_reads_nothing_and_returns_since() {
        let builder = BatchBuilder::new(7, 0, &PollLimits::default());
        assert_eq!(builder.first_wanted(), None);
        assert_eq!(builder.finish().last_seq, 7);
    }

    #[test]
    fn nothing_follows_u64_max() {
        assert_eq!(
            BatchBuilder::new(u64::MAX, 10, &PollLimits::default()).first_wanted(),
            None
        );
    }

    #[test]
    fn limit_is_clamped_to_max_events() {
        let mut builder = BatchBuilder::new(0, 100, &limits(3, usize::MAX));
        assert_eq!(builder.first_wanted(), Some(1));
        assert!(builder.push(event(1, 0)));
        assert!(builder.push(event(2, 0)));
        assert!(!builder.push(event(3, 0)), "full after the third");
        assert!(!builder.push(event(4, 0)));
        let batch = builder.finish();
        assert_eq!(batch.events.len(), 3);
        assert_eq!(batch.last_seq, 3);
    }

    #[test]
    fn byte_budget_stops_before_the_event_that_exceeds_it() {
        let mut builder = BatchBuilder::new(10, 100, &limits(100, 100));
        assert!(builder.push(event(11, 60)));
        assert!(
            !builder.push(event(12, 40)),
            "kept: exactly at the budget, now spent"
        );
        assert!(!builder.push(event(13, 1)), "left out");
        let batch = builder.finish();
        assert_eq!(batch.last_seq, 12);
        assert_eq!(batch.events.len(), 2);
    }

    #[test]
    fn first_event_is_returned_even_above_the_budget() {
        let mut builder = BatchBuilder::new(0, 100, &limits(100, 10));
        assert!(
            !builder.push(event(1, 1000)),
            "kept, and the budget is spent"
        );
        assert!(!builder.push(event(2, 0)), "left out");
        assert_eq!(builder.finish().last_seq, 1);
    }
}
