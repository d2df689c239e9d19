//! Events as JSON lines: `append`, `import` and `tail`.
//!
//! One event per line:
//! `{"seq":1,"kind":"created","entity":"<uuid>","collective":"<uuid>","timestamp_ms":1700000000000,"payload":{...}}`
//! `payload` is any JSON value, stored as its exact text; bytes that are not JSON are written as
//! `"payload_hex"`. On import `seq` is ignored (the log assigns it), `timestamp_ms` defaults to
//! now, and `payload`/`payload_hex` are optional.

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::{Change, ChangeKind, Event, Log};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InLine<'a> {
    #[serde(default)]
    #[allow(dead_code)]
    seq: Option<u64>,
    kind: ChangeKind,
    entity: Uuid,
    collective: Uuid,
    timestamp_ms: Option<u64>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    payload_hex: Option<String>,
}

#[derive(Serialize)]
struct OutLine<'a> {
    seq: u64,
    kind: &'static str,
    entity: Uuid,
    collective: Uuid,
    timestamp_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

fn parse_line(line: &str) -> anyhow::Result<Change> {
    let parsed: InLine = serde_json::from_str(line)?;
    let payload = match (parsed.payload, parsed.payload_hex) {
        (Some(_), Some(_)) => bail!("give payload or payload_hex, not both"),
        (Some(json), None) => json.get().as_bytes().to_vec(),
        (None, Some(hex)) => decode_hex(&hex).context("payload_hex")?,
        (None, None) => Vec::new(),
    };
    let change = Change::new(
        parsed.kind,
        parsed.entity.as_u128(),
        parsed.collective.as_u128(),
    )
    .with_payload(payload);
    Ok(match parsed.timestamp_ms {
        Some(ts) => change.at(ts),
        None => change,
    })
}

fn decode_hex(hex: &str) -> anyhow::Result<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16).context("not a hex digit");
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    bytes
        .chunks(2)
        .map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

fn write_event(out: &mut impl Write, event: &Event) -> anyhow::Result<()> {
    let payload = &event.change.payload;
    let json = std::str::from_utf8(payload)
        .ok()
        .filter(|_| !payload.is_empty())
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    let line = OutLine {
        seq: event.seq,
        kind: event.change.kind.as_str(),
        entity: Uuid::from_u128(event.change.entity),
        collective: Uuid::from_u128(event.change.collective),
        timestamp_ms: event.change.timestamp_ms,
        payload: json,
        payload_hex: (json.is_none() && !payload.is_empty())
            .then(|| payload.iter().map(|b| format!("{b:02x}")).collect()),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Arguments of `pulsewatch append`.
#[derive(ClapArgs)]
pub struct AppendArgs {
    /// The database file (created if missing).
    #[arg(long)]
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
    #[arg(long)]
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
    let log = Log::create(&args.db)?;
    let seq = log.append(&change)?;
    println!("{seq}");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pulsewatch import`.
#[derive(ClapArgs)]
pub struct ImportArgs {
    /// The database file (created if missing).
    #[arg(long)]
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

pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let (name, reader): (String, Box<dyn BufRead + Send>) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
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
    let parse = |index: usize, line: std::io::Result<String>| -> anyhow::Result<Option<Change>> {
        let line = line.with_context(|| format!("{name}:{}: cannot read", index + 1))?;
        if line.trim().is_empty() {
            return Ok(None);
        }
        let change = parse_line(&line).with_context(|| format!("{name}:{}", index + 1))?;
        Ok(Some(change))
    };
    if args.stream {
        return import_stream(&args.db, reader, parse);
    }
    // Parse everything before writing anything: a bad line leaves the database untouched.
    let mut changes = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        changes.extend(parse(index, line)?);
    }
    let log = Log::create(&args.db)?;
    let head = log.append_batch(&changes)?;
    eprintln!("imported {} events; head is now {head}", changes.len());
    Ok(ExitCode::SUCCESS)
}

/// Appends lines as they arrive: a thread reads them, and each commit takes every line that
/// arrived meanwhile (up to [`STREAM_GROUP`]), so a slow trickle is durable line by line and a
/// burst shares transactions.
fn import_stream(
    db: &std::path::Path,
    reader: Box<dyn BufRead + Send>,
    parse: impl Fn(usize, std::io::Result<String>) -> anyhow::Result<Option<Change>>,
) -> anyhow::Result<ExitCode> {
    let log = Log::create(db)?;
    let (lines, arrived) = std::sync::mpsc::sync_channel(STREAM_GROUP);
    std::thread::spawn(move || {
        for line in reader.lines().enumerate() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut imported = 0;
    let mut head = log.head()?;
    let mut group = Vec::new();
    while let Ok(first) = arrived.recv() {
        let mut bad = None;
        for (index, line) in std::iter::once(first).chain(arrived.try_iter().take(STREAM_GROUP - 1))
        {
            match parse(index, line) {
                Ok(change) => group.extend(change),
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if !group.is_empty() {
            head = log.append_batch(&group).with_context(|| {
                format!("the {imported} events before these were imported; head is {head}")
            })?;
            imported += group.len();
            group.clear();
        }
        if let Some(e) = bad {
            bail!("{e:#}; the {imported} events before it were imported; head is now {head}");
        }
    }
    eprintln!("imported {imported} events; head is now {head}");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pulsewatch tail`.
#[derive(ClapArgs)]
pub struct TailArgs {
    /// The database file.
    #[arg(long)]
    db: PathBuf,
    /// Print events after this seq.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep waiting for new events (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
}

pub fn tail(args: &TailArgs) -> anyhow::Result<ExitCode> {
    let log = Log::open_read_only(&args.db)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut since = args.since;
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let batch = log.poll(since, u32::try_from(left).unwrap_or(u32::MAX))?;
        if batch.events.is_empty() {
            if !args.follow {
                break;
            }
            out.flush()?;
            log.wait(since, Duration::from_secs(1))?;
            continue;
        }
        for event in &batch.events {
            write_event(&mut out, event)?;
        }
        left -= batch.events.len() as u64;
        since = batch.last_seq;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips_with_its_exact_payload() {
        let line = r#"{"kind":"updated","entity":"67e55044-10b1-426f-9247-bb680e5fe0c8","collective":"00000000-0000-0000-0000-00000000000a","timestamp_ms":5,"payload":{"b":1, "a":[2]}}"#;
        let change = parse_line(line).unwrap();
        assert_eq!(change.payload, br#"{"b":1, "a":[2]}"#);
        let mut out = Vec::new();
        write_event(
            &mut out,
            &Event {
                seq: 9,
                change: change.clone(),
            },
        )
        .unwrap();
        let again = parse_line(std::str::from_utf8(&out).unwrap().trim_end()).unwrap();
        assert_eq!(again, change);
    }

    #[test]
    fn binary_payloads_use_hex() {
        let change = Change::new(ChangeKind::Deleted, 1, 2).with_payload(vec![0xff, 0x00]);
        let mut out = Vec::new();
        write_event(
            &mut out,
            &Event {
                seq: 1,
                change: change.clone(),
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""payload_hex":"ff00""#), "{text}");
        assert_eq!(parse_line(text.trim_end()).unwrap(), change);
    }

    #[test]
    fn bad_hex_is_an_error_not_a_panic() {
        for hex in ["aéb", "+f", "abc", "zz"] {
            assert!(decode_hex(hex).is_err(), "{hex}");
        }
        assert_eq!(decode_hex("00fFa0").unwrap(), [0, 255, 160]);
    }

    #[test]
    fn bad_lines_say_why() {
        let err = parse_line(r#"{"kind":"moved","entity":"x","collective":"y"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("unknown variant"), "{err:#}");
        assert!(parse_line("not json").is_err());
    }
}
