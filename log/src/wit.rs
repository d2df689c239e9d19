//! The mapping between the log's types and the WIT contract's, written once for every side that
//! implements `pulse:watch/feed` (the host, a provider component), each with its own generated
//! bindings. [`feed_conversions!`](crate::feed_conversions) expands to three functions,
//! `to_wit(Event) -> wit::Event`, `uuid(u128) -> wit::Uuid` and `poll_error(ReadError) ->
//! wit::PollError`, over the bindings module the caller has imported as `wit`.

/// Defines `to_wit`, `uuid` and `poll_error` for the `pulse:watch/feed` bindings in scope as
/// `wit`. See the [module](crate::wit) documentation.
#[macro_export]
macro_rules! feed_conversions {
    () => {
        /// Why a poll failed, in the contract's terms: an undecodable event is named by its
        /// seq, deleted events by the oldest kept; anything else leaves the log unavailable for now.
        fn poll_error(err: $crate::ReadError) -> wit::PollError {
            match err {
                $crate::ReadError::Undecodable { seq, .. } => wit::PollError::Undecodable(seq),
                $crate::ReadError::Truncated { oldest } => wit::PollError::Truncated(oldest),
                other => wit::PollError::Unavailable(other.to_string()),
            }
        }

        /// A 128-bit identifier as the contract's two halves, most significant first.
        fn uuid(id: u128) -> wit::Uuid {
            wit::Uuid {
                hi: (id >> 64) as u64,
                lo: id as u64,
            }
        }

        /// Moves a log event into its WIT form; the payload is moved, not copied.
        fn to_wit(event: $crate::Event) -> wit::Event {
            let $crate::Change {
                kind,
                entity,
                collective,
                timestamp_ms,
                payload,
            } = event.change;
            wit::Event {
                seq: event.seq,
                kind: match kind {
                    $crate::ChangeKind::Created => wit::ChangeKind::Created,
                    $crate::ChangeKind::Updated => wit::ChangeKind::Updated,
                    $crate::ChangeKind::Archived => wit::ChangeKind::Archived,
                    $crate::ChangeKind::Deleted => wit::ChangeKind::Deleted,
                },
                entity: uuid(entity),
                collective: uuid(collective),
                timestamp_ms,
                payload,
            }
        }
    };
}
