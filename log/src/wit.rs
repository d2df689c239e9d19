//! The mapping between the log's types and the WIT contract's, written once for every side of
//! `pulse:watch/feed` (the host and a provider component, which implement it, and the guest SDK,
//! which reads it), each with its own generated bindings, imported by the caller as `wit`.
//! [`wire_conversions!`](crate::wire_conversions) expands to `change_kind(ChangeKind) ->
//! wit::ChangeKind` and `uuid(u128) -> wit::Uuid`, and back (`from_change_kind`, `from_uuid`); [`feed_conversions!`](crate::feed_conversions)
//! adds `to_wit(Event) -> wit::Event` and `poll_error(ReadError) -> wit::PollError`.

/// Defines `change_kind` and `uuid` for the `pulse:watch/feed` bindings in scope as `wit`. See
/// the [module](crate::wit) documentation.
#[macro_export]
macro_rules! wire_conversions {
    () => {
        // Each side uses the directions it needs: a plugin reading the feed never converts back.
        /// A change kind as the contract's.
        #[allow(dead_code)]
        fn change_kind(kind: $crate::ChangeKind) -> wit::ChangeKind {
            match kind {
                $crate::ChangeKind::Created => wit::ChangeKind::Created,
                $crate::ChangeKind::Updated => wit::ChangeKind::Updated,
                $crate::ChangeKind::Archived => wit::ChangeKind::Archived,
                $crate::ChangeKind::Deleted => wit::ChangeKind::Deleted,
            }
        }

        /// A 128-bit identifier as the contract's two halves, most significant first.
        #[allow(dead_code)]
        fn uuid(id: u128) -> wit::Uuid {
            wit::Uuid {
                hi: (id >> 64) as u64,
                lo: id as u64,
            }
        }

        /// The contract's change kind as the log's (for derived events).
        #[allow(dead_code)]
        fn from_change_kind(kind: wit::ChangeKind) -> $crate::ChangeKind {
            match kind {
                wit::ChangeKind::Created => $crate::ChangeKind::Created,
                wit::ChangeKind::Updated => $crate::ChangeKind::Updated,
                wit::ChangeKind::Archived => $crate::ChangeKind::Archived,
                wit::ChangeKind::Deleted => $crate::ChangeKind::Deleted,
            }
        }

        /// The contract's two halves as one 128-bit identifier.
        #[allow(dead_code)]
        fn from_uuid(id: wit::Uuid) -> u128 {
            (u128::from(id.hi) << 64) | u128::from(id.lo)
        }
    };
}

/// Defines `change_kind`, `uuid`, `to_wit` and `poll_error` for the `pulse:watch/feed` bindings
/// in scope as `wit`. See the [module](crate::wit) documentation.
#[cfg(feature = "store")]
#[macro_export]
macro_rules! feed_conversions {
    () => {
        $crate::wire_conversions!();

        /// Why a poll failed, in the contract's terms: an undecodable event is named by its
        /// seq, deleted events by the oldest kept, events a salvage left out by the first one
        /// after them (the contract's `truncated`: they are gone, and the plugin is told);
        /// anything else leaves the log unavailable for now.
        fn poll_error(err: $crate::ReadError) -> wit::PollError {
            match err {
                $crate::ReadError::Undecodable { seq, .. } => wit::PollError::Undecodable(seq),
                $crate::ReadError::Truncated { oldest } => wit::PollError::Truncated(oldest),
                $crate::ReadError::Lost { last, .. } => {
                    wit::PollError::Truncated(last.saturating_add(1))
                }
                other => wit::PollError::Unavailable(other.to_string()),
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
                kind: change_kind(kind),
                entity: uuid(entity),
                collective: uuid(collective),
                timestamp_ms,
                payload,
            }
        }
    };
}
