//! Events as JSON lines, one event a line, as `pulsewatch import` reads them and `pulsewatch
//! tail` writes them:
//!
//! `{"seq":1,"kind":"created","entity":"<uuid>","collective":"<uuid>","timestamp_ms":1700000000000,"payload":{...}}`
//!
//! `payload` is any JSON value, stored as its exact text (without surrounding white space);
//! bytes that are not JSON are written as `"payload_hex"`. Read, `seq` is ignored (the log
//! assigns it), `timestamp_ms` defaults to now, and `payload`/`payload_hex` are optional.

use crate::{Change, ChangeKind, Event, Origin};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::Write;
use uuid::Uuid;

/// Why a line is not an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonLineError {
    /// It is not a JSON object.
    #[error(
        "not an event: each line is one JSON object, such as {{\"kind\":\"created\",\"entity\":\"<uuid>\",\"collective\":\"<uuid>\"}}"
    )]
    NotAnObject,
    /// It is not JSON, or not an object of an event's fields.
    #[error("not an event: {}", said(.0))]
    Json(serde_json::Error),
    /// It gives both payload forms.
    #[error("give payload or payload_hex, not both")]
    BothPayloads,
    /// `payload_hex` is not hex.
    #[error("payload_hex is not hex: {0}")]
    Hex(&'static str),
}

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
    // Given, even as `null`, it is the payload's text; only a missing one is no payload.
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    payload_hex: Option<String>,
    // What `tail` adds for a derived event: it says where the event came from, and is not
    // part of the change, so an import takes the line and leaves these out.
    #[serde(default)]
    #[allow(dead_code)]
    origin: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<serde::de::IgnoredAny>,
}

/// A field that is there, whatever its value.
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(value).map(Some)
}

#[derive(Serialize)]
struct OutLine<'a> {
    // What `pulsewatch test` expects of a derived event names its output and leaves out the
    // commit's time and the origin's input log (a temporary file): its id says the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    seq: u64,
    kind: &'static str,
    entity: Uuid,
    collective: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_ms: Option<u64>,
    #[serde(flatten)]
    payload: Bytes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<OutOrigin<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

impl<'a> OutLine<'a> {
    /// The change of `event` with its seq, and nothing else.
    fn of(event: &'a Event) -> Self {
        OutLine {
            output: None,
            seq: event.seq,
            kind: event.change.kind.as_str(),
            entity: Uuid::from_u128(event.change.entity),
            collective: Uuid::from_u128(event.change.collective),
            timestamp_ms: None,
            payload: Bytes::of(&event.change.payload),
            origin: None,
            id: None,
        }
    }
}

/// Bytes as JSON if that gives back these very bytes on one line (JSON text without white space
/// around it or line breaks in it), else as hex: a payload, or a plugin's state.
#[derive(Serialize)]
struct Bytes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
}

impl<'a> Bytes<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        let json = std::str::from_utf8(bytes)
            .ok()
            .filter(|text| !text.is_empty() && !text.contains(['\n', '\r']))
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
            .filter(|raw| raw.get().len() == bytes.len());
        Bytes {
            payload: json,
            payload_hex: (json.is_none() && !bytes.is_empty())
                .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
    }
}

/// A plugin's checkpoint in an output, as `pulsewatch test` expects it.
#[derive(Serialize)]
struct CheckpointLine<'a> {
    output: &'a str,
    cursor: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_hex: Option<String>,
}

#[derive(Serialize)]
struct OutOrigin<'a> {
    input: &'a str,
    plugin: &'a str,
    seq: u64,
    index: u32,
}

impl From<serde_json::Error> for JsonLineError {
    fn from(error: serde_json::Error) -> Self {
        JsonLineError::Json(error)
    }
}

/// What the JSON parser says, for a line: its column (the line is the caller's to name), and
/// numbers as numbers rather than Rust's types.
fn said(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => format!("{} (at column {})", &text[..at], error.column()),
        None => text,
    };
    text.replace("expected u64", "expected a whole number")
}

/// The change a line describes.
pub fn parse_line(line: &str) -> Result<Change, JsonLineError> {
    // A byte-order mark some editors write at the start of a file is no part of the event.
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    if !line.trim_start().starts_with('{') {
        return Err(JsonLineError::NotAnObject);
    }
    let parsed: InLine = serde_json::from_str(line)?;
    let payload = match (parsed.payload, parsed.payload_hex) {
        (Some(_), Some(_)) => return Err(JsonLineError::BothPayloads),
        (Some(json), None) => json.get().as_bytes().to_vec(),
        (None, Some(hex)) => decode_hex(&hex).map_err(JsonLineError::Hex)?,
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

fn decode_hex(hex: &str) -> Result<Vec<u8>, &'static str> {
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .ok_or("a character is not a hex digit")
    };
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err("an odd number of hex digits");
    }
    bytes
        .chunks(2)
        .map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// Writes `event` as one line; a derived event with its `origin` and the stable `id` it gives.
pub fn write_event(
    out: &mut impl Write,
    event: &Event,
    origin: Option<&Origin>,
) -> std::io::Result<()> {
    let line = OutLine {
        timestamp_ms: Some(event.change.timestamp_ms),
        origin: origin.map(|o| OutOrigin {
            input: &o.input,
            plugin: &o.plugin,
            seq: o.seq,
            index: o.index,
        }),
        id: origin.map(Origin::id),
        ..OutLine::of(event)
    };
    write_line(out, &line)
}

/// Writes the derived `event` of the log `output` as one line of what a run must derive: what
/// is the same in every run (the event, its output and its id), not when it was committed.
pub fn write_derived(
    out: &mut impl Write,
    output: &str,
    event: &Event,
    origin: Option<&Origin>,
) -> std::io::Result<()> {
    let line = OutLine {
        output: Some(output),
        id: origin.map(Origin::id),
        ..OutLine::of(event)
    };
    write_line(out, &line)
}

/// Writes a plugin's checkpoint in the log `output` (its cursor and state) as one line.
pub fn write_checkpoint(
    out: &mut impl Write,
    output: &str,
    cursor: u64,
    state: Option<&[u8]>,
) -> std::io::Result<()> {
    let forms = state.map(Bytes::of);
    write_line(
        out,
        &CheckpointLine {
            output,
            cursor,
            state: forms.as_ref().and_then(|s| s.payload),
            // An empty state shows as "", apart from none (the initial state).
            state_hex: forms
                .and_then(|s| s.payload_hex)
                .or_else(|| state.filter(|s| s.is_empty()).map(|_| String::new())),
        },
    )
}

fn write_line(out: &mut impl Write, line: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
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
        // A derived event's origin and id are shown, and left out when the line is read back.
        let origin = Origin {
            input: "events.redb".into(),
            plugin: "totals".into(),
            seq: 3,
            index: 1,
        };
        write_event(
            &mut out,
            &Event {
                seq: 9,
                change: change.clone(),
            },
            Some(&origin),
        )
        .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains(r#""origin":{"input":"events.redb","plugin":"totals","seq":3,"index":1},"id":"totals:3:1""#),
            "{text}"
        );
        let again = parse_line(text.trim_end()).unwrap();
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
            None,
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
