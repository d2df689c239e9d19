//! A redb log published into a stream as it grows, with the same seqs, exactly once however
//! often the relay stops or is killed: where to go on from is the stream's last seq, and each
//! batch is published with the stream's last sequence expected to be the one before it, so
//! that a publish still in flight when a relay died and one of its successor cannot both be
//! stored. Whichever lands second is refused, and the relay goes on after the stream's last
//! seq once it has checked that the event there is the log's.

use super::{JetStreamError, StreamAddr, StreamWriter};
use crate::runtime::StopSignal;
use bytes::Bytes;
use pulsewatch_log::codec::Entries;
use pulsewatch_log::{Log, PollLimits, ReadError};

/// Events read from the log and published at once.
const BATCH: u32 = 1_000;

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] JetStreamError),
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] ReadError),
    /// The stream holds events the log does not, or other events at the same seqs: it is not
    /// this log's stream.
    #[error("stream {stream} is not a copy of {log}: {why}; relay into a new stream")]
    Diverged {
        /// The stream.
        stream: String,
        /// The log's path.
        log: String,
        /// What differs.
        why: String,
    },
}

/// What a relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Events it published.
    pub events: u64,
    /// The stream's last seq when it stopped.
    pub last_seq: u64,
}

/// Publishes the events of `log` that the stream of `addr` lacks, then, with `follow`, each
/// new one as it is committed, until `stop`.
pub async fn relay(
    log: &Log,
    addr: &StreamAddr,
    follow: bool,
    stop: &StopSignal,
) -> Result<Relayed, RelayError> {
    let mut writer = StreamWriter::open_as(addr, "relay").await?;
    check_prefix(log, addr, &writer).await?;
    let limits = PollLimits::default();
    let mut published = 0;
    let mut bytes = Vec::new();
    while !stop.is_stopped() {
        let generation = log.generation();
        let since = writer.next_seq() - 1;
        bytes.clear();
        let packed = log.poll_packed(since, BATCH, &limits, &mut bytes)?;
        if packed.events > 0 {
            let entries = Entries::new(&bytes)
                .map(|e| Bytes::copy_from_slice(e.as_bytes()))
                .collect();
            match writer.publish(entries).await {
                Ok(_) => published += packed.events as u64,
                // The stream moved on: a publish of a relay killed before this one landed
                // late. If it holds the log's events, go on after them.
                Err(JetStreamError::Conflict { .. }) => check_prefix(log, addr, &writer).await?,
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        if !follow {
            break;
        }
        tokio::select! {
            () = stop.stopped() => {}
            _ = log.appended(generation) => {}
            () = tokio::time::sleep(log.recheck_interval()) => {}
        }
    }
    Ok(Relayed {
        events: published,
        last_seq: writer.next_seq() - 1,
    })
}

/// Checks that the stream is this log's so far: no longer than it, and its last event the
/// log's event of that seq, byte for byte.
async fn check_prefix(
    log: &Log,
    addr: &StreamAddr,
    writer: &StreamWriter,
) -> Result<(), RelayError> {
    let last = writer.next_seq() - 1;
    if last == 0 {
        return Ok(());
    }
    let diverged = |why: String| RelayError::Diverged {
        stream: addr.stream.clone(),
        log: log.path().display().to_string(),
        why,
    };
    let head = log.head()?;
    if last > head {
        return Err(diverged(format!(
            "the stream's last seq is {last}, the log's {head}"
        )));
    }
    let mut ours = Vec::new();
    log.poll_packed(last - 1, 1, &PollLimits::default(), &mut ours)?;
    let theirs = writer.stored(last).await?;
    if ours != theirs {
        return Err(diverged(format!("their events of seq {last} differ")));
    }
    Ok(())
}
