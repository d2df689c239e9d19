//! The feed on NATS JetStream: one stream holds the log, one message per event, the stream's
//! sequence number being the event's seq. JetStream gives what a log on one machine cannot:
//! replication (R3), and writers, hosts and plugins on many machines.
//!
//! What keeps the contract:
//! - Each message's body is the event's entry in the packed layout of `poll-packed`
//!   ([`pulsewatch_log::codec`]), seq included, so a packed poll hands the bodies out as they are
//!   after checking each against the seq the stream gave it.
//! - Seqs stay gap-free: the stream denies deletes and purges, and retention drops messages from
//!   the front only ([`stream_config`]). A writer appends with an expected last sequence, so an
//!   event lands at the seq it encodes or not at all, and with a message id, so a retry after a
//!   lost acknowledgement is not stored twice ([`StreamWriter`]).
//!
//! A feed is named by a location `nats://HOST:PORT[,HOST:PORT...]/STREAM` ([`StreamAddr`]),
//! given where a database path is given otherwise.

pub mod cluster;
mod feed;
mod output;
mod relay;
mod writer;

pub use feed::{StreamFeed, StreamReader};
pub use output::{INPUT_HEADER, ORIGIN_HEADER, StreamOutput};
pub use relay::{RelayError, Relayed, relay};
pub use writer::StreamWriter;

use async_nats::jetstream::{self, stream};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The scheme that marks a feed location as a JetStream stream rather than a database file.
pub const SCHEME: &str = "nats://";

/// How long a request to the server may take before the feed says it is unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A JetStream stream and the servers to reach it by: `nats://HOST:PORT[,HOST:PORT...]/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamAddr {
    /// `HOST:PORT` of each server to try.
    pub servers: Vec<String>,
    /// The stream's name.
    pub stream: String,
}

impl StreamAddr {
    /// The stream named by a feed location given as a path (`--db`, a manifest's `input`), or
    /// `None` for a database file.
    pub fn from_location(location: &Path) -> Option<Result<StreamAddr, BadAddr>> {
        let text = location.to_str()?;
        text.starts_with(SCHEME).then(|| text.parse())
    }

    /// The subject its events are published on by writers.
    pub fn subject(&self) -> String {
        format!("{}.events", self.stream)
    }

    /// The subject the events `plugin` derives into it are published on: one a plugin, so that
    /// the last event of a plugin's is one direct get away ([`StreamOutput`]).
    pub fn derived_subject(&self, plugin: &str) -> String {
        format!("{}.derived.{plugin}", self.stream)
    }

    /// The subjects a stream holding a log takes: writers' and plugins'. Readers take every
    /// message of the stream, whatever its subject, so that each seq is an event.
    fn subjects(&self) -> [String; 2] {
        [self.subject(), self.derived_subject("*")]
    }
}

impl fmt::Display for StreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.servers.join(","), self.stream)
    }
}

/// A stream location that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location:?} is not a stream location ({why}): expected nats://HOST:PORT/STREAM")]
pub struct BadAddr {
    location: String,
    why: &'static str,
}

impl std::str::FromStr for StreamAddr {
    type Err = BadAddr;

    fn from_str(text: &str) -> Result<Self, BadAddr> {
        let bad = |why| BadAddr {
            location: text.to_owned(),
            why,
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with nats://"))?;
        let (servers, stream) = rest
            .split_once('/')
            .ok_or_else(|| bad("no stream is named after the servers"))?;
        let servers: Vec<String> = servers.split(',').map(str::to_owned).collect();
        if servers.iter().any(|s| s.is_empty() || s.contains('@')) {
            return Err(bad("each server is HOST:PORT, without credentials"));
        }
        // JetStream's own rule for names, kept narrower: they become subject tokens too.
        let valid = !stream.is_empty()
            && stream.len() <= 255
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(bad(
                "a stream name is letters, digits, '-' and '_', at most 255 of them",
            ));
        }
        Ok(StreamAddr {
            servers,
            stream: stream.to_owned(),
        })
    }
}

/// Why a JetStream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    /// No server of the location could be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The location.
        addr: String,
        /// The client's reason.
        reason: String,
    },
    /// The stream does not exist.
    #[error("stream {stream} does not exist: create it with `pulsewatch stream create {addr}`")]
    NoStream {
        /// Its name.
        stream: String,
        /// The location, for the command to run.
        addr: String,
    },
    /// The stream exists with a configuration that would let seqs have gaps, or that a feed
    /// cannot read.
    #[error("stream {stream} cannot hold a pulsewatch log: {why}")]
    BadConfig {
        /// Its name.
        stream: String,
        /// What is wrong.
        why: String,
    },
    /// A request failed or timed out: nothing was consumed; of an append, see
    /// [`StreamWriter::append`].
    #[error("JetStream is unavailable: {0}")]
    Unavailable(String),
    /// Another writer appended in between: nothing of this append was stored.
    #[error(
        "another writer appended to stream {stream} (its last seq is now {found}, not {expected}); nothing of this append was stored"
    )]
    Conflict {
        /// Its name.
        stream: String,
        /// The last seq this writer expected.
        expected: u64,
        /// The last seq the stream has.
        found: u64,
    },
    /// The events asked for begin with ones retention deleted; nothing was skipped.
    #[error("the events asked for were deleted by retention: the oldest stored is seq {oldest}")]
    Truncated {
        /// The seq of the oldest message still stored.
        oldest: u64,
    },
    /// A name that cannot be used: of a cluster, or of a plugin shared by hosts.
    #[error("{0}")]
    BadName(String),
    /// A stored message is not an event of this seq (written by something other than
    /// pulsewatch, or a newer version).
    #[error("message {seq} of the stream is not a pulsewatch event: {why}")]
    Undecodable {
        /// Its seq.
        seq: u64,
        /// Why.
        why: String,
    },
}

impl JetStreamError {
    fn unavailable(what: &str, error: impl fmt::Display) -> JetStreamError {
        JetStreamError::Unavailable(format!("{what}: {error}"))
    }
}

/// Connects to the servers of `addr`. The client reconnects by itself after a connection is
/// lost, to any server of the cluster.
pub async fn connect(addr: &StreamAddr) -> Result<async_nats::Client, JetStreamError> {
    let failed = |reason: String| JetStreamError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let servers = addr
        .servers
        .iter()
        .map(|s| format!("nats://{s}").parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(servers)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// How a stream made by [`create_stream`] keeps its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Servers holding a copy (1, or 3 for a cluster that survives a server's loss).
    pub replicas: usize,
    /// Messages older than this are dropped from the front (none: kept).
    pub max_age: Option<Duration>,
    /// The oldest messages are dropped past this many bytes (none: no bound).
    pub max_bytes: Option<i64>,
}

/// The configuration of a stream that holds a pulsewatch log: seqs stay gap-free (no deletes,
/// no purges, limits retention dropping the oldest), direct gets allowed (`seq-at` and single
/// reads use them), atomic batches allowed (appends use them).
pub fn stream_config(addr: &StreamAddr, options: &StreamOptions) -> stream::Config {
    stream::Config {
        name: addr.stream.clone(),
        subjects: addr.subjects().to_vec(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        num_replicas: options.replicas.max(1),
        max_age: options.max_age.unwrap_or_default(),
        max_bytes: options.max_bytes.unwrap_or(-1),
        // A retry is recognised by the id stored with the event (see writer.rs), whenever it
        // comes: the server's window of recent ids need not be long.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// What in `config` would break the log's contract, if anything.
pub fn check_config(addr: &StreamAddr, config: &stream::Config) -> Result<(), JetStreamError> {
    let mut wrong = Vec::new();
    if !config.deny_delete {
        wrong.push("messages can be deleted (deny_delete is off)");
    }
    if !config.deny_purge {
        wrong.push("it can be purged (deny_purge is off)");
    }
    if !config.allow_direct {
        wrong.push("direct gets are off (allow_direct)");
    }
    if config.retention != stream::RetentionPolicy::Limits {
        wrong.push("its retention is not limits-based");
    }
    if config.discard != stream::DiscardPolicy::Old {
        wrong.push("it discards new messages when full, not the oldest");
    }
    if config.max_messages_per_subject > 0 {
        wrong
            .push("it keeps a bounded number of messages per subject, which drops from the middle");
    }
    let subject = addr.subject();
    let missing = format!("it does not take {subject}, the subject events are published on");
    if !config.subjects.contains(&subject) {
        wrong.push(&missing);
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(JetStreamError::BadConfig {
            stream: addr.stream.clone(),
            why: wrong.join("; "),
        })
    }
}

/// Makes the stream of `addr` with [`stream_config`], or checks one that exists: a stream made
/// otherwise is refused with what is wrong, never changed. Returns whether it was made.
pub async fn create_stream(
    addr: &StreamAddr,
    options: &StreamOptions,
) -> Result<bool, JetStreamError> {
    let client = connect(addr).await?;
    let js = jetstream::new(client);
    match open_stream(&js, addr).await {
        Ok(_) => Ok(false),
        Err(JetStreamError::NoStream { .. }) => {
            js.create_stream(stream_config(addr, options))
                .await
                .map_err(|e| JetStreamError::unavailable("cannot create the stream", e))?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// The stream of `addr`, checked to hold a log.
async fn open_stream(
    js: &jetstream::Context,
    addr: &StreamAddr,
) -> Result<stream::Stream, JetStreamError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    let found = js
        .get_stream(&addr.stream)
        .await
        .map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(error)
                if error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                JetStreamError::NoStream {
                    stream: addr.stream.clone(),
                    addr: addr.to_string(),
                }
            }
            _ => JetStreamError::unavailable("cannot read the stream", e),
        })?;
    check_config(addr, &found.cached_info().config)?;
    Ok(found)
}

/// 16 hex digits, random: what tells one writer's (or one batch's) message ids from another's.
/// Without randomness from the system, the time and the process id stand in.
fn random_id() -> String {
    let mut id = [0u8; 8];
    if getrandom::fill(&mut id).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stream's first and last seq now.
async fn bounds(stream: &stream::Stream) -> Result<(u64, u64), JetStreamError> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| JetStreamError::unavailable("cannot read the stream's state", e))?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let addr: StreamAddr = "nats://127.0.0.1:4222,10.0.0.2:4222/EVENTS"
            .parse()
            .unwrap();
        assert_eq!(addr.servers, ["127.0.0.1:4222", "10.0.0.2:4222"]);
        assert_eq!(addr.stream, "EVENTS");
        assert_eq!(
            addr.to_string(),
            "nats://127.0.0.1:4222,10.0.0.2:4222/EVENTS"
        );
        assert_eq!(addr.subject(), "EVENTS.events");
        assert_eq!(addr.derived_subject("p"), "EVENTS.derived.p");
        assert!(StreamAddr::from_location(Path::new("events.redb")).is_none());
        for bad in [
            "nats://h:1",
            "nats://h:1/",
            "nats://h:1/a.b",
            "nats://u:p@h:1/S",
            "http://h:1/S",
            "nats:///S",
        ] {
            assert!(bad.parse::<StreamAddr>().is_err(), "{bad}");
        }
    }
}
