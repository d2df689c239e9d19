//! Events as JSON lines ([`pulsewatch::jsonl`]): `append`, `import` and `tail`.

use super::{events, safety, signals};
use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::jetstream::{StreamAddr, StreamFeed};
use pulsewatch::jsonl::{parse_line, write_event};
use pulsewatch::{Batch, Change, ChangeKind, Log, Origin, PollLimits};
use serde_json::value::RawValue;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Where `append` and `import` write: a database file, or a JetStream stream.
// One of these is made per command, never moved about: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Log(Log),
    Stream(super::jetstream::Writer),
}

impl Target {
    /// The database at `db` (created if missing), or the stream it names.
    fn open(db: &Path) -> anyhow::Result<Target> {
        Ok(match StreamAddr::from_location(db) {
            Some(addr) => Target::Stream(super::jetstream::Writer::open(&addr?)?),
            None => Target::Log(Log::create(db)?),
        })
    }

    /// Appends `changes`, all or nothing in a database; the seq of the last.
    fn append_batch(&mut self, changes: &[Change]) -> anyhow::Result<u64> {
        Ok(match self {
            Target::Log(log) => log.append_batch(changes)?,
            Target::Stream(writer) => writer.append(changes)?,
        })
    }

    /// The seq of the last event.
    fn head(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Target::Log(log) => log.head()?,
            Target::Stream(writer) => writer.head(),
        })
    }
}

/// Arguments of `pulsewatch append`.
#[derive(ClapArgs)]
pub struct AppendArgs {
    /// The database file (created if missing), or a JetStream stream as
    /// nats://HOST:PORT/STREAM (made with `pulsewatch stream create`).
    #[arg(long, visible_alias = "to", value_name = "DB|nats://HOST:PORT/STREAM")]
    db: PathBuf,
    /// created, updated, archived or deleted.
    #[arg(long)]
    kind: ChangeKind,
    /// The entity's UUID.
    #[arg(long)]
    entity: Uuid,
    /// The collective's UUID.
    #[arg(long)]
    collective: Uuid,
    /// Payload as JSON text.
    #[arg(long)]
    payload: Option<String>,
    /// Milliseconds since the Unix epoch (default: now).
    #[arg(long, allow_negative_numbers = true)]
    timestamp_ms: Option<u64>,
}

pub fn append(args: &AppendArgs) -> anyhow::Result<ExitCode> {
    let payload = match &args.payload {
        // Stored as `import` stores it: the value's text without surrounding white space.
        Some(text) => serde_json::from_str::<&RawValue>(text)
            .context("--payload is not valid JSON")?
            .get()
            .as_bytes()
            .to_vec(),
        None => Vec::new(),
    };
    let mut change = Change::new(args.kind, args.entity.as_u128(), args.collective.as_u128())
        .with_payload(payload);
    if let Some(ts) = args.timestamp_ms {
        change = change.at(ts);
    }
    // A stop signal waits for the append's commit and the file's clean close.
    let caught = signals::catch_stops(|_| {})?;
    let mut target = Target::open(&args.db)?;
    let seq = target.append_batch(std::slice::from_ref(&change))?;
    drop(target);
    out!("{seq}")?;
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}

/// Arguments of `pulsewatch import`.
#[derive(ClapArgs)]
pub struct ImportArgs {
    /// The database file (created if missing), or a JetStream stream as
    /// nats://HOST:PORT/STREAM, where an import that fails midway leaves the events before
    /// the failure appended.
    #[arg(long, visible_alias = "to", value_name = "DB|nats://HOST:PORT/STREAM")]
    db: PathBuf,
    /// JSON-lines file to read; `-` or nothing for stdin.
    file: Option<PathBuf>,
    /// Append lines as they arrive (each durable within one commit of its arrival), instead of
    /// all at once at the end of the input: for a writer that pipes events in as they happen.
    /// A bad line stops the import; the lines before it stay appended.
    #[arg(long)]
    stream: bool,
}

/// The most lines a streaming import commits in one transaction.
const STREAM_GROUP: usize = 10_000;

/// What the import's reading thread and signal handler tell it.
enum Input {
    /// A line, by its index from 0.
    Line(usize, std::io::Result<String>),
    /// The input ended.
    End,
    /// A stop signal came.
    Stop(i32),
}

pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let (name, reader): (String, Box<dyn BufRead + Send>) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            if safety::same_file(path, &args.db) {
                bail!(
                    "{} is the database to import into, not a file of JSON lines; give the file \
                     of events (or - for stdin)",
                    path.display()
                );
            }
            let file = std::fs::File::open(path)
                .with_context(|| format!("{}: cannot open", path.display()))?;
            (
                path.display().to_string(),
                Box::new(std::io::BufReader::new(file)),
            )
        }
        _ => (
            "<stdin>".to_owned(),
            Box::new(std::io::BufReader::new(std::io::stdin())),
        ),
    };
    // Lines are read on a thread of their own, so that a stop signal reaches the import while
    // it waits for input; the signal ends it after its transaction, never in the middle.
    let (inputs, arrived) = std::sync::mpsc::sync_channel(STREAM_GROUP);
    let stops = inputs.clone();
    let caught = signals::catch_stops(move |signal| drop(stops.send(Input::Stop(signal))))?;
    std::thread::spawn(move || {
        for (index, line) in reader.lines().enumerate() {
            if inputs.send(Input::Line(index, line)).is_err() {
                return;
            }
        }
        let _ = inputs.send(Input::End);
    });
    let parse = |index: usize, line: std::io::Result<String>| -> anyhow::Result<Option<Change>> {
        let line = line.with_context(|| format!("{name}:{}: cannot read", index + 1))?;
        if line.trim().is_empty() {
            return Ok(None);
        }
        let change = parse_line(&line).with_context(|| format!("{name}:{}", index + 1))?;
        Ok(Some(change))
    };
    if args.stream {
        return import_stream(&args.db, &arrived, parse);
    }
    // Parse everything before writing anything: a bad line, or a stop before the input ends,
    // leaves the database untouched.
    let mut changes = Vec::new();
    loop {
        match arrived.recv() {
            Ok(Input::Line(index, line)) => changes.extend(parse(index, line)?),
            Ok(Input::End) | Err(_) => break,
            Ok(Input::Stop(signal)) => {
                say!(
                    "pulsewatch: stopped by {} before the input ended: nothing imported (an \
                     import without --stream is all or nothing)",
                    signals::name(signal)
                );
                return Ok(signals::exit_code(signal));
            }
        }
    }
    let mut target = Target::open(&args.db)?;
    let head = target.append_batch(&changes)?;
    drop(target);
    say!(
        "imported {}; head is now {head}",
        events(changes.len() as u64)
    );
    // A stop that came during the commit waited for it.
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}

/// Appends lines as they arrive: each commit takes every line that arrived meanwhile (up to
/// [`STREAM_GROUP`]), so a slow trickle is durable line by line and a burst shares
/// transactions. A bad line stops it, and so does a stop signal, each after committing the lines
/// before it; the log is closed cleanly either way.
fn import_stream(
    db: &std::path::Path,
    arrived: &std::sync::mpsc::Receiver<Input>,
    parse: impl Fn(usize, std::io::Result<String>) -> anyhow::Result<Option<Change>>,
) -> anyhow::Result<ExitCode> {
    let mut target = Target::open(db)?;
    let mut imported = 0;
    let mut head = target.head()?;
    let mut group = Vec::new();
    while let Ok(first) = arrived.recv() {
        let mut bad = None;
        let mut ended = None;
        for input in std::iter::once(first).chain(arrived.try_iter().take(STREAM_GROUP - 1)) {
            match input {
                Input::Line(index, line) => match parse(index, line) {
                    Ok(change) => group.extend(change),
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                },
                Input::End => {
                    ended = Some(None);
                    break;
                }
                Input::Stop(signal) => {
                    ended = Some(Some(signal));
                    break;
                }
            }
        }
        if !group.is_empty() {
            head = target.append_batch(&group).with_context(|| {
                format!(
                    "imported {} before these; head is {head}",
                    events(imported as u64)
                )
            })?;
            imported += group.len();
            group.clear();
        }
        if let Some(e) = bad {
            bail!(
                "{}; imported {} before it; head is now {head}",
                super::sentence(&e),
                events(imported as u64)
            );
        }
        match ended {
            None => {}
            Some(None) => break,
            Some(Some(signal)) => {
                drop(target);
                say!(
                    "pulsewatch: stopped by {}: imported {}; head is now {head}; the log is \
                     closed cleanly",
                    signals::name(signal),
                    events(imported as u64)
                );
                return Ok(signals::exit_code(signal));
            }
        }
    }
    say!("imported {}; head is now {head}", events(imported as u64));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pulsewatch tail`.
#[derive(ClapArgs)]
pub struct TailArgs {
    /// The database file, or a JetStream stream as nats://HOST:PORT/STREAM.
    #[arg(long, value_name = "DB|nats://HOST:PORT/STREAM")]
    db: PathBuf,
    /// Print events after this seq.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    since: u64,
    /// Stop after this many events.
    #[arg(long, allow_negative_numbers = true)]
    limit: Option<u64>,
    /// Keep waiting for new events (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
}

pub fn tail(args: &TailArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = StreamAddr::from_location(&args.db) {
        let executor = super::jetstream::executor()?;
        let feed = Arc::new(executor.block_on(StreamFeed::open(&addr?))?);
        let mut reader = feed.reader().with_origins();
        let limits = PollLimits::default();
        let poll = |since, limit| -> anyhow::Result<_> {
            let batch = executor.block_on(reader.poll(since, limit, &limits))?;
            Ok((batch, reader.take_origins()))
        };
        let wait = |since| {
            let deadline = Instant::now() + Duration::from_secs(1);
            executor.block_on(feed.wait_past(since, Some(deadline)));
            Ok(())
        };
        return print_events(args, poll, wait);
    }
    let log = Log::open_read_only(&args.db)?;
    let poll = |since, limit| -> anyhow::Result<_> {
        let batch = log.poll(since, limit)?;
        let origins = match batch.events.first() {
            Some(first) => log.origins(first.seq, batch.last_seq)?,
            None => Vec::new(),
        };
        Ok((batch, origins))
    };
    let wait = |since| {
        log.wait(since, Duration::from_secs(1))?;
        Ok(())
    };
    print_events(args, poll, wait)
}

/// Prints the events `poll` gives from `args.since` on as JSON lines, with their origins,
/// waiting with `wait` for more when following.
fn print_events(
    args: &TailArgs,
    mut poll: impl FnMut(u64, u32) -> anyhow::Result<(Batch, Vec<(u64, Origin)>)>,
    wait: impl Fn(u64) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut since = args.since;
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let (batch, origins) = poll(since, u32::try_from(left).unwrap_or(u32::MAX))?;
        if batch.events.is_empty() {
            if !args.follow {
                break;
            }
            out.flush()?;
            wait(since)?;
            continue;
        }
        let mut origins = origins.into_iter().peekable();
        for event in &batch.events {
            let origin = origins
                .next_if(|(seq, _)| *seq == event.seq)
                .map(|(_, o)| o);
            write_event(&mut out, event, origin.as_ref())?;
        }
        left -= batch.events.len() as u64;
        since = batch.last_seq;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
