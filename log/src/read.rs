//! Reading the log: the head, and polls in two forms, typed events and packed bytes, through
//! one scan and one [`Budget`]. A caught-up poll is answered without a read transaction when
//! the log is known not to have changed since the head was last read.

use crate::codec::{CheckedBatch, DecodeError, Entries, EntryRef, batch, entry};
use crate::log::{KnownHead, Log, ReadError, last_seq, storage};
use crate::poll::{Batch, Budget, PollLimits};
use crate::salvage;
use crate::schema::BATCHES;
use redb::ReadableTable;
use std::time::{Duration, Instant};

/// What a packed poll appended to its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// How many entries.
    pub events: usize,
    /// The cursor to pass next time: the seq of the last entry, or the `since` asked for.
    pub last_seq: u64,
}

/// The largest packed poll kept for the next reader asking the same: what one event wakes many
/// readers of one handle to read, not a large batch, whose copy would cost every reader.
const LAST_POLL_BYTES: usize = 16 << 10;

/// A packed poll's answer, kept while the log does not change.
#[derive(Debug)]
pub(crate) struct LastPoll {
    /// The change count before it was read.
    at: u64,
    since: u64,
    limit: u32,
    limits: PollLimits,
    packed: Packed,
    bytes: Vec<u8>,
}

/// Where the entry of `seq` begins in a batch that holds it, reading the entries before it.
fn offset_of(batch: &CheckedBatch<'_>, seq: u64) -> Result<usize, DecodeError> {
    let bytes = batch.as_bytes();
    let mut offset = batch::ENTRIES;
    for due in batch.first()..seq {
        let (entry, _) = EntryRef::split_due(&bytes[offset..], due)?;
        offset += entry.as_bytes().len();
    }
    Ok(offset)
}

impl Log {
    /// The seq of the newest event, 0 when the log is empty. Read again only when the log has
    /// changed since it was last read, where every change is known: the waiters of a handle
    /// that many plugins share then read it once for all of them.
    pub fn head(&self) -> Result<u64, ReadError> {
        if self.changes.is_complete() {
            let known = *self.known.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = known.filter(|k| k.exact && k.at == self.changes.count()) {
                return Ok(known.head);
            }
        }
        let at = self.changes.count();
        let txn = self.begin_read()?;
        // Seqs a salvage lost at the end of the log were given: the head is past them.
        let head =
            last_seq(&txn.open_table(BATCHES).map_err(storage)?)?.max(salvage::lost_end(&txn)?);
        self.remember(head, at, true);
        Ok(head)
    }

    /// Records that the head was `head` (`exact`) or at most `head` when the change count was
    /// `at`. A bound does not replace the head itself read at the same count, unless it is
    /// above it: a commit not yet counted was read, and the kept head is behind.
    fn remember(&self, head: u64, at: u64, exact: bool) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if !exact && known.is_some_and(|k| k.exact && k.at == at && k.head >= head) {
            return;
        }
        *known = Some(KnownHead { head, at, exact });
    }

    /// Whether there is certainly nothing at or after `seq`: the head read last was below it,
    /// and the log has not changed since (which only a complete change count can tell).
    fn known_below(&self, seq: u64) -> bool {
        if !self.changes.is_complete() {
            return false;
        }
        let known = *self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.is_some_and(|k| k.head < seq && k.at == self.changes.count())
    }

    /// The number of events stored.
    pub fn len(&self) -> Result<u64, ReadError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(BATCHES).map_err(storage)?;
        let Some((first, _)) = table.first().map_err(storage)? else {
            return Ok(0);
        };
        let (first, last) = (first.value(), last_seq(&table)?);
        let lost: u64 = salvage::lost_ranges(&txn)?
            .into_iter()
            .filter(|r| r.start() <= r.end() && *r.end() >= first && *r.start() <= last)
            .map(|r| (*r.end()).min(last) - (*r.start()).max(first) + 1)
            .sum();
        Ok((last - first + 1).saturating_sub(lost))
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> Result<bool, ReadError> {
        Ok(self.len()? == 0)
    }

    /// The events after `since`, at most `limit` of them and within the default [`PollLimits`],
    /// by an O(k) range scan. See [`Batch`] for the returned cursor.
    pub fn poll(&self, since: u64, limit: u32) -> Result<Batch, ReadError> {
        self.poll_within(since, limit, &PollLimits::default())
    }

    /// The events after `since`, at most `limit` of them and within `limits`.
    ///
    /// A damaged batch ends the poll before it; if it holds the first event asked for, the poll
    /// fails with [`ReadError::Undecodable`] at that seq.
    pub fn poll_within(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
    ) -> Result<Batch, ReadError> {
        let mut events = Vec::new();
        let mut broken = None;
        let budget = self.scan(since, limit, limits, |bytes| {
            if broken.is_some() {
                return;
            }
            let mut entries = Entries::new(bytes);
            events.extend(entries.by_ref().map(|entry| entry.to_event()));
            // A batch that passed its checksum but holds a malformed entry was written so by a
            // faulty writer: nothing from it on is delivered.
            broken = entries.error().cloned();
        })?;
        if let Some(source) = broken {
            let seq = events.last().map_or(since, |e| e.seq) + 1;
            if events.is_empty() {
                return Err(ReadError::Undecodable { seq, source });
            }
            return Ok(Batch {
                last_seq: seq - 1,
                events,
            });
        }
        Ok(Batch {
            events,
            last_seq: budget.last_seq(),
        })
    }

    /// The same events as [`Log::poll_within`], appended to `out` as they are stored: entries
    /// back to back, in the layout of [`crate::codec`]. No event is decoded and nothing is
    /// allocated per event.
    ///
    /// Where every change to the file is known, a small answer is kept until the log changes:
    /// when one event wakes many readers sharing this handle, it is read once for all of them.
    pub fn poll_packed(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
        out: &mut Vec<u8>,
    ) -> Result<Packed, ReadError> {
        // The change count before the read, where it tells every change.
        let at = self.changes.is_complete().then(|| self.changes.count());
        if let Some(at) = at {
            let last = self.last_poll.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = last
                .as_ref()
                .filter(|l| (l.at, l.since, l.limit, l.limits) == (at, since, limit, *limits))
            {
                out.extend_from_slice(&last.bytes);
                return Ok(last.packed);
            }
        }
        let start = out.len();
        let budget = self.scan(since, limit, limits, |entries| {
            out.extend_from_slice(entries)
        })?;
        let packed = Packed {
            events: budget.len(),
            last_seq: budget.last_seq(),
        };
        if let Some(at) = at.filter(|_| packed.events > 0 && out.len() - start <= LAST_POLL_BYTES) {
            *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastPoll {
                at,
                since,
                limit,
                limits: *limits,
                packed,
                bytes: out[start..].to_vec(),
            });
        }
        Ok(packed)
    }

    /// Reads the events after `since` within a [`Budget`], handing `take` the checked entries
    /// of each batch it reads, as one slice of stored bytes.
    fn scan(
        &self,
        since: u64,
        limit: u32,
        limits: &PollLimits,
        mut take: impl FnMut(&[u8]),
    ) -> Result<Budget, ReadError> {
        let mut budget = Budget::new(since, limit, limits);
        let Some(first) = budget.first_wanted() else {
            return Ok(budget);
        };
        if self.known_below(first) {
            return Ok(budget);
        }
        let at = self.changes.count();
        let txn = self.begin_read()?;
        let table = txn.open_table(BATCHES).map_err(storage)?;
        // The batch holding `first` is the last one stored at or before it. None means an
        // empty log, or one whose oldest events retention deleted.
        let start = match table.range(..=first).map_err(storage)?.next_back() {
            Some(entry) => entry.map_err(storage)?.0.value(),
            None => match table.first().map_err(storage)? {
                Some((oldest, _)) => {
                    let oldest = oldest.value();
                    let lost = salvage::covered(&salvage::lost_ranges(&txn)?, first, oldest - 1);
                    return Err(if lost {
                        ReadError::Lost {
                            first,
                            last: oldest - 1,
                        }
                    } else {
                        ReadError::Truncated { oldest }
                    });
                }
                None => first,
            },
        };
        let mut expected = None;
        let mut head = None;
        let mut stopped = false;
        for item in table.range(start..).map_err(storage)? {
            let (key, stored) = item.map_err(storage)?;
            let key = key.value();
            let stored = stored.value();
            let undecodable = |source| ReadError::Undecodable {
                seq: key.max(first),
                source,
            };
            // Seqs follow on from the batch before, but across a range a salvage recorded as
            // lost: a reader that reaches it is told, never skips it.
            let gap = match expected {
                Some(due)
                    if due < key
                        && salvage::covered(&salvage::lost_ranges(&txn)?, due, key - 1) =>
                {
                    if !budget.is_empty() {
                        stopped = true;
                        break;
                    }
                    if first < key {
                        return Err(ReadError::Lost {
                            first: first.max(due),
                            last: key - 1,
                        });
                    }
                    None
                }
                Some(due) if due != key => Some(DecodeError::Malformed(format!(
                    "a batch from seq {key} where {due} was due"
                ))),
                _ => None,
            };
            let checked = match gap {
                Some(malformed) => Err(malformed),
                None => CheckedBatch::new(key, stored),
            };
            let batch = match checked {
                Ok(batch) => batch,
                Err(source) if budget.is_empty() => return Err(undecodable(source)),
                Err(_) => {
                    stopped = true;
                    break;
                }
            };
            expected = batch.last().checked_add(1);
            head = Some(batch.last());
            if batch.last() < first {
                // The batch stored before `first` ends before it.
                continue;
            }
            // Where the wanted part of the batch begins: the batch holding `first` is read from
            // it; later batches whole.
            let (mut offset, from) = if batch.first() >= first {
                (batch::ENTRIES, batch.first())
            } else {
                match offset_of(&batch, first) {
                    Ok(offset) => (offset, first),
                    Err(source) if budget.is_empty() => return Err(undecodable(source)),
                    Err(_) => {
                        stopped = true;
                        break;
                    }
                }
            };
            // The common case: the rest of the batch fits the budget outright, and is admitted
            // and handed over at once, without reading its entries one by one.
            let rest = (batch.last() - from + 1) as usize;
            let rest_payload = rest
                .checked_mul(entry::PAYLOAD)
                .and_then(|headers| (stored.len() - offset).checked_sub(headers));
            if let Some(payload) = rest_payload.filter(|&p| budget.fits_all(rest, p)) {
                match EntryRef::split_due(&stored[offset..], from) {
                    Ok(_) => {}
                    Err(_) if !budget.is_empty() => {
                        stopped = true;
                        break;
                    }
                    Err(source) => return Err(undecodable(source)),
                }
                budget.admit_all(rest, payload, batch.last());
                take(&stored[offset..]);
                if !budget.has_room() {
                    stopped = true;
                    break;
                }
                continue;
            }
            // Otherwise entries are admitted one by one; the batch's share is handed over as one
            // slice, and only once it read well.
            let before = budget.clone();
            let mut span: Option<(usize, usize)> = None;
            let mut broken = None;
            let mut rest_bytes = &stored[offset..];
            let mut due = from;
            while !rest_bytes.is_empty() {
                let entry = match EntryRef::split_due(rest_bytes, due) {
                    Ok((entry, after)) => {
                        rest_bytes = after;
                        entry
                    }
                    Err(source) => {
                        broken = Some(source);
                        break;
                    }
                };
                due += 1;
                let end = offset + entry.as_bytes().len();
                if !budget.admit(entry.seq(), entry.payload().len()) {
                    stopped = true;
                    break;
                }
                span.get_or_insert((offset, end)).1 = end;
                offset = end;
                if !budget.has_room() {
                    stopped = true;
                    break;
                }
            }
            if let Some(source) = broken {
                budget = before;
                if budget.is_empty() {
                    return Err(undecodable(source));
                }
                stopped = true;
                break;
            }
            if let Some((from, to)) = span {
                take(&stored[from..to]);
            }
            if stopped {
                break;
            }
        }
        if !stopped {
            // Read to the end: the head was the last entry seen, or (nothing at or after
            // `first`) below `first`.
            self.remember(head.unwrap_or(first - 1).max(budget.last_seq()), at, false);
        }
        Ok(budget)
    }

    /// Blocks until the head passes `since` or `timeout` has passed; returns the head.
    ///
    /// Appends through this `Log` wake the waiter at once, and so do commits by other processes
    /// where it watches the file (a read-only `Log` on Linux); elsewhere those are seen within
    /// [`Log::recheck_interval`].
    pub fn wait(&self, since: u64, timeout: Duration) -> Result<u64, ReadError> {
        // A timeout too large to represent is as good as forever.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let seen = self.changes.count();
            let head = self.head()?;
            let now = Instant::now();
            if head > since || deadline.is_some_and(|d| now >= d) {
                return Ok(head);
            }
            let recheck = self.changes.recheck();
            let slice = deadline.map_or(recheck, |d| (d - now).min(recheck));
            self.changes.wait(seen, slice);
        }
    }
}
