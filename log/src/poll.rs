//! Poll semantics shared by every backend and by both forms of a batch (typed events, packed
//! bytes): limit clamping, the byte budget and the returned cursor. A backend offers events in
//! seq order; [`Budget`] decides where the batch ends.

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

/// Where one batch ends, whatever form it takes.
#[derive(Debug, Clone)]
pub struct Budget {
    max_events: usize,
    max_bytes: usize,
    events: usize,
    bytes: usize,
    last_seq: u64,
}

impl Budget {
    /// The budget of a batch of the events after `since`, asked for with `limit`.
    pub fn new(since: u64, limit: u32, limits: &PollLimits) -> Self {
        Budget {
            max_events: limit.min(limits.max_events) as usize,
            max_bytes: limits.max_bytes,
            events: 0,
            bytes: 0,
            last_seq: since,
        }
    }

    /// The first seq a backend should read, or `None` if nothing is to be read: the limit is 0,
    /// or `since` is `u64::MAX` and nothing can follow it.
    pub fn first_wanted(&self) -> Option<u64> {
        // Only the limit: the byte budget never keeps out the first event.
        if self.events >= self.max_events {
            return None;
        }
        self.last_seq.checked_add(1)
    }

    /// Offers the next event in seq order, by its seq and payload length. Returns whether it is
    /// in the batch: it is left out if the batch is full, or if its payload would take the batch
    /// past the byte budget (unless it is the first). Once an event is left out, or
    /// [`Budget::has_room`] says no, the backend stops reading.
    pub fn admit(&mut self, seq: u64, payload_len: usize) -> bool {
        if self.events >= self.max_events {
            return false;
        }
        let bytes = self.bytes.saturating_add(payload_len);
        if bytes > self.max_bytes && self.events > 0 {
            return false;
        }
        self.bytes = bytes;
        self.events += 1;
        self.last_seq = seq;
        true
    }

    /// Whether `events` more events, with `payload_bytes` of payload between them, would all be
    /// admitted one by one, with room left for more: the limit takes them and their payloads
    /// stay below the byte budget (reaching it exactly ends the batch at that event).
    pub fn fits_all(&self, events: usize, payload_bytes: usize) -> bool {
        self.events.saturating_add(events) <= self.max_events
            && self.bytes.saturating_add(payload_bytes) < self.max_bytes
    }

    /// Admits `events` events at once, of which the last has `last_seq`: what
    /// [`Budget::admit`] would have done for each, when [`Budget::fits_all`] says so.
    pub fn admit_all(&mut self, events: usize, payload_bytes: usize, last_seq: u64) {
        self.events += events;
        self.bytes += payload_bytes;
        self.last_seq = last_seq;
    }

    /// Whether the batch can take another event: it is below its limit and its byte budget is
    /// not spent (a spent budget ends the batch here, rather than after reading one more event).
    pub fn has_room(&self) -> bool {
        self.events < self.max_events && self.bytes < self.max_bytes
    }

    /// Whether the batch holds no event yet.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.events
    }

    /// The cursor to return: the seq of the last event admitted, or `since` if none was.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

/// The answer to a typed poll: the events after `since`, and the cursor to pass next time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Events in ascending seq order, without gaps.
    pub events: Vec<Event>,
    /// The seq of the last event in `events`, or the `since` asked for if there are none.
    pub last_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers an event, as a backend does: whether the batch can take more after it.
    fn push(budget: &mut Budget, seq: u64, payload_len: usize) -> bool {
        budget.admit(seq, payload_len) && budget.has_room()
    }

    fn limits(max_events: u32, max_bytes: usize) -> PollLimits {
        PollLimits {
            max_events,
            max_bytes,
        }
    }

    #[test]
    fn limit_zero_reads_nothing_and_returns_since() {
        let budget = Budget::new(7, 0, &PollLimits::default());
        assert_eq!(budget.first_wanted(), None);
        assert_eq!(budget.last_seq(), 7);
    }

    #[test]
    fn nothing_follows_u64_max() {
        assert_eq!(
            Budget::new(u64::MAX, 10, &PollLimits::default()).first_wanted(),
            None
        );
    }

    #[test]
    fn limit_is_clamped_to_max_events() {
        let mut budget = Budget::new(0, 100, &limits(3, usize::MAX));
        assert_eq!(budget.first_wanted(), Some(1));
        assert!(push(&mut budget, 1, 0));
        assert!(push(&mut budget, 2, 0));
        assert!(!push(&mut budget, 3, 0), "full after the third");
        assert!(!push(&mut budget, 4, 0));
        assert_eq!(budget.len(), 3);
        assert_eq!(budget.last_seq(), 3);
    }

    #[test]
    fn byte_budget_stops_before_the_event_that_exceeds_it() {
        let mut budget = Budget::new(10, 100, &limits(100, 100));
        assert!(push(&mut budget, 11, 60));
        assert!(
            !push(&mut budget, 12, 40),
            "kept: exactly at the budget, now spent"
        );
        assert!(!push(&mut budget, 13, 1), "left out");
        assert_eq!(budget.last_seq(), 12);
        assert_eq!(budget.len(), 2);
    }

    #[test]
    fn first_event_is_returned_even_above_the_budget() {
        let mut budget = Budget::new(0, 100, &limits(100, 10));
        assert!(budget.admit(1, 1000), "kept");
        assert!(!budget.has_room(), "and the budget is spent");
        assert!(!budget.admit(2, 0), "left out");
        assert_eq!(budget.last_seq(), 1);
        assert_eq!(budget.len(), 1);
    }
}
