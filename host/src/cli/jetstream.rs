//! Commands on NATS JetStream: `stream create`, `relay`, and the writer behind `append` and
//! `import` into a stream.

use super::signals;
use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use pulsewatch::jetstream::{
    JetStreamError, StreamAddr, StreamFeed, StreamOptions, StreamWriter, create_stream, relay,
};
use pulsewatch::{Change, Log, StopSignal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// An executor for one command's requests, with a thread of its own that keeps its
/// connections answering the server between them (a server drops a client that does not).
pub fn executor() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async executor")
}

/// Runs `future` to its end on an executor of its own.
pub fn block_on<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
    Ok(executor()?.block_on(future))
}

/// A [`StreamWriter`] for a command that does not run async code itself.
pub struct Writer {
    executor: tokio::runtime::Runtime,
    writer: StreamWriter,
}

impl Writer {
    /// Opens the stream of `addr` for appending.
    pub fn open(addr: &StreamAddr) -> anyhow::Result<Writer> {
        let executor = executor()?;
        let writer = executor.block_on(StreamWriter::open(addr))?;
        Ok(Writer { executor, writer })
    }

    /// Appends `changes`; the seq of the last. One retry after an unacknowledged publish,
    /// which the stream recognises by the message ids where the first try got through.
    pub fn append(&mut self, changes: &[Change]) -> Result<u64, JetStreamError> {
        self.executor.block_on(async {
            match self.writer.append(changes).await {
                Err(JetStreamError::Unavailable(_)) => self.writer.append(changes).await,
                appended => appended,
            }
        })
    }

    /// The seq of the last event appended, as this writer knows it.
    pub fn head(&self) -> u64 {
        self.writer.next_seq() - 1
    }
}

/// What `status` and `--metrics` read a run's feed from: its database, or its stream.
// One of these is made per command, never moved about: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Feed {
    /// A database file, read-only.
    Log(Log),
    /// A stream, with the executor that drives its connection.
    Stream(tokio::runtime::Runtime, StreamFeed),
}

impl Feed {
    /// The database at `db`, read-only, or the stream it names.
    pub fn open(db: &Path) -> anyhow::Result<Feed> {
        Ok(match StreamAddr::from_location(db) {
            Some(addr) => {
                let addr = addr?;
                let executor = executor()?;
                let stream = executor.block_on(StreamFeed::open(&addr))?;
                Feed::Stream(executor, stream)
            }
            None => Feed::Log(Log::open_read_only(db)?),
        })
    }

    /// The seq of the newest event.
    pub fn head(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Feed::Log(log) => log.head()?,
            Feed::Stream(executor, stream) => executor.block_on(stream.head())?,
        })
    }

    /// The seq of the oldest event held.
    pub fn oldest(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Feed::Log(log) => log.oldest()?,
            Feed::Stream(executor, stream) => executor.block_on(stream.oldest())?,
        })
    }

    /// The writer's stamp of the event of `seq`, if it is held.
    pub fn timestamp_ms(&self, seq: u64) -> Option<u64> {
        match self {
            Feed::Log(log) => {
                let batch = log.poll(seq.checked_sub(1)?, 1).ok()?;
                batch.events.first().map(|e| e.change.timestamp_ms)
            }
            Feed::Stream(executor, stream) => {
                executor.block_on(stream.timestamp_ms(seq)).ok().flatten()
            }
        }
    }
}

/// Subcommands of `pulsewatch stream`.
#[derive(Subcommand)]
pub enum StreamCommand {
    /// Make a stream that holds a log (gap-free seqs: no deletes or purges, the oldest dropped
    /// first), or check that an existing one does.
    Create(CreateArgs),
}

/// Arguments of `pulsewatch stream create`.
#[derive(ClapArgs)]
pub struct CreateArgs {
    /// The stream, as nats://HOST:PORT[,HOST:PORT...]/STREAM.
    stream: StreamAddr,
    /// Servers holding a copy: 3 on a cluster keeps every acknowledged event through the loss
    /// of one server.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Drop events older than this (e.g. 7d); kept forever by default.
    #[arg(long)]
    max_age: Option<humantime::Duration>,
    /// Drop the oldest events past this many bytes; no bound by default.
    #[arg(long)]
    max_bytes: Option<i64>,
}

/// Runs a `pulsewatch stream` subcommand.
pub fn stream(command: &StreamCommand) -> anyhow::Result<ExitCode> {
    let StreamCommand::Create(args) = command;
    let options = StreamOptions {
        replicas: args.replicas,
        max_age: args.max_age.map(Into::into),
        max_bytes: args.max_bytes,
    };
    let made = block_on(create_stream(&args.stream, &options))??;
    say!(
        "{}: {}",
        args.stream,
        if made {
            "created"
        } else {
            "exists, and holds a log"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pulsewatch relay`.
#[derive(ClapArgs)]
pub struct RelayArgs {
    /// The database file to publish, opened read-only (its writer may append meanwhile).
    #[arg(long)]
    db: PathBuf,
    /// The stream to publish it into, as nats://HOST:PORT/STREAM (see `stream create`).
    #[arg(long)]
    to: StreamAddr,
    /// Keep publishing new events as they are committed; Ctrl-C stops.
    #[arg(long)]
    follow: bool,
}

/// Publishes a log into a stream, with the same seqs, exactly once across restarts.
pub fn relay_command(args: &RelayArgs) -> anyhow::Result<ExitCode> {
    let stop = StopSignal::new();
    let stopping = stop.clone();
    let caught = signals::catch_stops(move |_| stopping.stop())?;
    let log = Log::open_read_only(&args.db)?;
    let relayed = block_on(relay(&log, &args.to, args.follow, &stop))??;
    say!(
        "relayed {}; the stream's last seq is {}",
        super::events(relayed.events),
        relayed.last_seq
    );
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}
