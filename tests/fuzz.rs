//! Fuzzing as tests: arbitrary and damaged input through every parser (stored batches, manifests,
//! JSON lines) and through the feed, natively and from a guest component. For every input
//! proptest generates, nothing panics and the answer is a value or a typed error: the one the
//! format or the contract in wit/feed.wit says.

mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use pulsewatch::{Change, ChangeKind};

/// Any change: every kind, any ids and stamp, a payload of any bytes.
fn any_change() -> impl Strategy<Value = Change> {
    (
        prop::sample::select(&ChangeKind::ALL[..]),
        any::<u128>(),
        any::<u128>(),
        any::<u64>(),
        vec(any::<u8>(), 0..200),
    )
        .prop_map(|(kind, entity, collective, timestamp_ms, payload)| {
            Change::new(kind, entity, collective)
                .at(timestamp_ms)
                .with_payload(payload)
        })
}

/// The stored batch: its header checks, and its entries read whole, in order, from arbitrary,
/// damaged and faultily written bytes.
mod batches {
    use super::*;
    use pulsewatch_log::codec::{
        BATCH_V2, BatchWriter, CheckedBatch, DecodeError, Entries, EntryRef, batch, encode_entry,
        entry, entry_len,
    };

    /// A batch of `changes`, the first with seq `first`.
    fn batch_of(first: u64, changes: &[Change]) -> Vec<u8> {
        let mut writer = BatchWriter::new();
        for (i, change) in changes.iter().enumerate() {
            writer.push(first + i as u64, change);
        }
        writer.finish()
    }

    /// A batch's changes as the log's readers take them: all of them, or an error.
    fn decode(first: u64, bytes: &[u8]) -> Result<Vec<Change>, DecodeError> {
        CheckedBatch::new(first, bytes)?
            .entries()
            .map(|entry| entry.map(|e| e.to_event().change))
            .collect()
    }

    /// A batch of `count` and `entries` behind a checksum that matches them, as a faulty writer
    /// would store it: what the checksum cannot catch, the entry checks must.
    fn checksummed(count: u32, entries: &[u8]) -> Vec<u8> {
        let mut bytes = vec![BATCH_V2, 0, 0, 0, 0];
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(entries);
        let crc = crc32c::crc32c(&bytes[batch::COUNT..]);
        bytes[batch::CRC..batch::COUNT].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Damage done to stored bytes.
    #[derive(Debug, Clone)]
    enum Damage {
        /// A byte XORed with a mask that is never 0.
        Flip(Index, u8),
        Cut(Index),
        Insert(Index, Vec<u8>),
        Remove(Index, usize),
        /// An entry's seq, kind or payload length overwritten: the fields a reader must not
        /// trust to index with.
        Field(Index, usize, u64),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        let lie = prop_oneof![
            Just(0),
            Just(u64::MAX),
            Just(u64::MAX - entry::PAYLOAD as u64 + 1),
            0u64..300,
            any::<u64>()
        ];
        let field = prop::sample::select(&[entry::SEQ, entry::KIND, entry::PAYLOAD_LEN][..]);
        prop_oneof![
            (any::<Index>(), 1..=u8::MAX).prop_map(|(at, mask)| Damage::Flip(at, mask)),
            any::<Index>().prop_map(Damage::Cut),
            (any::<Index>(), vec(any::<u8>(), 1..80)).prop_map(|(at, b)| Damage::Insert(at, b)),
            (any::<Index>(), 1usize..80).prop_map(|(at, n)| Damage::Remove(at, n)),
            (any::<Index>(), field, lie).prop_map(|(at, f, v)| Damage::Field(at, f, v)),
        ]
    }

    /// Does `damage` to `entries` (entries back to back, no batch header).
    fn apply(entries: &mut Vec<u8>, damage: &Damage) {
        let len = entries.len();
        match damage {
            Damage::Flip(at, mask) if len > 0 => entries[at.index(len)] ^= mask,
            Damage::Cut(at) => entries.truncate(at.index(len + 1)),
            Damage::Insert(at, bytes) => {
                let at = at.index(len + 1);
                entries.splice(at..at, bytes.iter().copied());
            }
            Damage::Remove(at, n) if len > 0 => {
                let at = at.index(len);
                entries.drain(at..(at + n).min(len));
            }
            Damage::Field(which, field, value) => {
                let mut starts = Vec::new();
                let mut offset = 0;
                for entry in Entries::new(entries) {
                    starts.push(offset);
                    offset += entry.as_bytes().len();
                }
                if starts.is_empty() {
                    return;
                }
                let at = starts[which.index(starts.len())] + field;
                if *field == entry::KIND {
                    entries[at] = *value as u8;
                } else {
                    entries[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
            _ => {}
        }
    }

    /// What every reader relies on, whatever a checked batch holds: its entries come whole and
    /// in seq order from its key, and the first error ends them.
    fn check_entries(batch: &CheckedBatch<'_>) -> Result<(), TestCaseError> {
        let mut entries = batch.entries();
        let mut due = batch.first();
        let mut read = 0u32;
        for entry in entries.by_ref() {
            let Ok(entry) = entry else { break };
            prop_assert_eq!(entry.seq(), due);
            prop_assert_eq!(entry.as_bytes().len(), entry_len(entry.payload().len()));
            due = due.wrapping_add(1);
            read += 1;
        }
        prop_assert!(read <= batch.len(), "{read} entries of {}", batch.len());
        prop_assert!(
            !matches!(entries.next(), Some(Ok(_))),
            "an entry was read after an error"
        );
        Ok(())
    }

    /// What `EntryRef::split` and `Entries` promise on any bytes: an entry is split off exactly
    /// when the layout's header is whole, its kind known and its payload all there, and the
    /// entries read are the bytes' prefix, all of them unless an error says why not.
    fn check_split(bytes: &[u8]) -> Result<(), TestCaseError> {
        let whole = bytes.get(..entry::PAYLOAD).is_some_and(|header| {
            let len = u64::from_le_bytes(header[entry::PAYLOAD_LEN..][..8].try_into().unwrap());
            header[entry::KIND] < 4 && len <= (bytes.len() - entry::PAYLOAD) as u64
        });
        match EntryRef::split(bytes) {
            Ok((entry, rest)) => {
                prop_assert!(whole);
                prop_assert_eq!([entry.as_bytes(), rest].concat(), bytes);
                prop_assert_eq!(entry.as_bytes().len(), entry_len(entry.payload().len()));
            }
            Err(e) => {
                prop_assert!(!whole, "a whole entry refused: {e}");
                prop_assert!(matches!(e, DecodeError::Malformed(_)), "{e:?}");
            }
        }
        let mut entries = Entries::new(bytes);
        let read: Vec<u8> = entries
            .by_ref()
            .flat_map(|e| e.as_bytes())
            .copied()
            .collect();
        prop_assert!(bytes.starts_with(&read));
        prop_assert_eq!(entries.error().is_none(), read.len() == bytes.len());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_bytes_are_refused_by_the_header_checks_or_read_whole(
            first: u64,
            bytes in vec(any::<u8>(), 0..400),
        ) {
            match CheckedBatch::new(first, &bytes) {
                Ok(batch) => {
                    prop_assert_eq!(bytes[batch::VERSION], BATCH_V2);
                    let count = u32::from_le_bytes(bytes[batch::COUNT..batch::ENTRIES].try_into().unwrap());
                    prop_assert_eq!(batch.len(), count);
                    check_entries(&batch)?;
                }
                Err(DecodeError::UnknownVersion(v)) => prop_assert_eq!(Some(&v), bytes.first()),
                Err(DecodeError::Checksum { stored, computed }) => {
                    prop_assert_ne!(stored, computed);
                    prop_assert_eq!(computed, crc32c::crc32c(&bytes[batch::COUNT..]));
                }
                Err(e) => prop_assert!(matches!(e, DecodeError::Malformed(_)), "{e:?}"),
            }
            check_split(&bytes)?;
        }

        #[test]
        fn a_valid_batch_reads_back_its_changes_under_its_own_key_only(
            first in prop_oneof![any::<u64>(), Just(0), Just(u64::MAX)],
            changes in vec(any_change(), 1..12),
            other_key in 1u64..,
        ) {
            // Up to the last seq there is: the key plus the count must not overflow.
            let first = first.min(u64::MAX - (changes.len() as u64 - 1));
            let stored = batch_of(first, &changes);
            prop_assert_eq!(decode(first, &stored), Ok(changes.clone()));
            let packed: Vec<Change> = Entries::new(&stored[batch::ENTRIES..]).map(|e| e.to_event().change).collect();
            prop_assert_eq!(packed, changes);
            prop_assert!(decode(first.wrapping_add(other_key), &stored).is_err());
        }

        /// Every byte is covered by a check: byte 0 by the version, bytes 1..5 are the checksum
        /// itself, and CRC32C catches every burst of up to 32 bits in the bytes after them. So
        /// no single changed byte ever decodes.
        #[test]
        fn a_batch_with_any_byte_changed_is_refused_by_its_header(
            first in 0u64..1 << 40,
            changes in vec(any_change(), 1..6),
            at: Index,
            mask in 1..=u8::MAX,
        ) {
            let mut stored = batch_of(first, &changes);
            let at = at.index(stored.len());
            stored[at] ^= mask;
            match CheckedBatch::new(first, &stored) {
                Err(DecodeError::UnknownVersion(v)) => prop_assert!(at == batch::VERSION && v == BATCH_V2 ^ mask),
                Err(DecodeError::Checksum { .. }) => prop_assert_ne!(at, batch::VERSION),
                other => prop_assert!(false, "byte {at} ^ {mask:#04x}: {other:?}"),
            }
        }

        /// A torn write: the checksum catches a cut always, and bytes added after the entries
        /// but for one chance in 2^32.
        #[test]
        fn a_cut_or_extended_batch_is_refused(
            changes in vec(any_change(), 1..6),
            cut: Index,
            more in vec(any::<u8>(), 1..80),
        ) {
            let stored = batch_of(1, &changes);
            prop_assert!(decode(1, &stored[..cut.index(stored.len())]).is_err());
            prop_assert!(decode(1, &[&stored[..], &more].concat()).is_err());
        }

        /// A faulty writer's batch: entries damaged, then checksummed as they are, under a count
        /// that may lie. The header passes exactly when the count is possible from the key; the
        /// entries then read as far as they are whole and in order.
        #[test]
        fn a_checksummed_batch_of_damaged_entries_reads_only_whole_entries_in_order(
            first in prop_oneof![0u64..1000, (u64::MAX - 20)..=u64::MAX, any::<u64>()],
            changes in vec(any_change(), 1..8),
            damages in vec(damage(), 0..4),
            count in prop_oneof![
                6 => Just(None),
                1 => Just(Some(0)),
                1 => Just(Some(u32::MAX)),
                2 => (0u32..12).prop_map(Some),
            ],
        ) {
            // Seqs from the key, so that undamaged entries are in order; past u64::MAX they wrap,
            // and it is for the header to refuse a count that cannot follow the key.
            let mut entries = Vec::new();
            for (i, change) in changes.iter().enumerate() {
                encode_entry(first.wrapping_add(i as u64), change, &mut entries);
            }
            for damage in &damages {
                apply(&mut entries, damage);
            }
            let count = count.unwrap_or(changes.len() as u32);
            let bytes = checksummed(count, &entries);
            let possible = count > 0 && first.checked_add(u64::from(count) - 1).is_some();
            match CheckedBatch::new(first, &bytes) {
                Ok(batch) => {
                    prop_assert!(possible);
                    prop_assert_eq!((batch.first(), batch.len()), (first, count));
                    prop_assert_eq!(batch.last(), first + (u64::from(count) - 1));
                    check_entries(&batch)?;
                }
                Err(e) => prop_assert!(!possible && matches!(e, DecodeError::Malformed(_)), "{e:?}"),
            }
            check_split(&entries)?;
        }
    }

    /// A batch may end at the very last seq: its last seq is computed without overflowing (it
    /// once computed `first + count` first, found by these tests).
    #[test]
    fn a_batch_that_ends_at_the_last_seq_there_is_says_so() {
        let change = Change::new(ChangeKind::Created, 1, 2);
        for (first, changes) in [(u64::MAX, 1), (u64::MAX - 2, 3)] {
            let stored = batch_of(first, &vec![change.clone(); changes]);
            let batch = CheckedBatch::new(first, &stored).unwrap();
            assert_eq!(batch.last(), u64::MAX);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Bytes after the counted entries, too short to be an entry, are refused: only a faulty
        /// writer (or damage the checksum misses) stores such a batch, and `pulsewatch repair`
        /// names it (they once passed unreported, found by these tests).
        #[test]
        fn a_checksummed_batch_with_bytes_after_its_entries_is_refused(
            changes in vec(any_change(), 1..4),
            trailing in vec(any::<u8>(), 1..80),
        ) {
            let stored = batch_of(1, &changes);
            let bytes = checksummed(changes.len() as u32, &[&stored[batch::ENTRIES..], &trailing].concat());
            prop_assert!(decode(1, &bytes).is_err(), "{} trailing bytes accepted", trailing.len());
        }
    }
}

/// The manifest parser: any text, and a valid manifest with any value for any of its keys.
mod manifests {
    use super::*;
    use pulsewatch::ManifestError;
    use pulsewatch::manifest;
    use std::path::{Path, PathBuf};

    /// The component: the parser reads only its bytes, to check their digest, so a few stand
    /// for one.
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A directory with the component in it, and where its manifest and state go.
    struct Fixture {
        _dir: tempfile::TempDir,
        manifest: PathBuf,
        state: PathBuf,
        sha: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpha.wasm"), COMPONENT).unwrap();
        Fixture {
            manifest: dir.path().join("plugins.toml"),
            state: dir.path().join("state"),
            sha: pulsewatch::sha256_hex(COMPONENT),
            _dir: dir,
        }
    }

    /// A manifest every key of which is valid, one key a line.
    fn valid_manifest(sha: &str) -> Vec<String> {
        [
            "[[plugin]]",
            "name = \"alpha\"",
            "component = \"alpha.wasm\"",
            &format!("sha256 = \"{sha}\""),
            "args = [\"--verbose\"]",
            "env = { REGION = \"eu\" }",
            "start = \"head\"",
            "restart = \"on-failure\"",
            "",
            "[plugin.limits]",
            "memory_mib = 64",
            "cpu = \"1s\"",
            "wall_clock = \"10m\"",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The keys of [`valid_manifest`] and their lines (from 1), as an error names them.
    const KEYS: [(&str, usize); 10] = [
        ("name", 2),
        ("component", 3),
        ("sha256", 4),
        ("args", 5),
        ("env", 6),
        ("start", 7),
        ("restart", 8),
        ("limits.memory_mib", 11),
        ("limits.cpu", 12),
        ("limits.wall_clock", 13),
    ];

    /// `s` as a TOML basic string.
    fn toml_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out += &format!("\\u{:04X}", u32::from(c)),
                c => out.push(c),
            }
        }
        out + "\""
    }

    /// Dates and times of every TOML form, some of them impossible (month 13, hour 24), some
    /// at the ends of what a time type holds.
    fn toml_date() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just(0u32), Just(1970), Just(9999), 0u32..10_000],
            0u32..14,
            0u32..33,
            0u32..25,
            0u32..61,
            prop::sample::select(&["Z", "+01:00", "-23:59", ".999999999Z", ""][..]),
            0..4,
        )
            .prop_map(|(y, mo, d, h, mi, tail, form)| match form {
                0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{tail}"),
                1 => format!("{y:04}-{mo:02}-{d:02}"),
                2 => format!("{h:02}:{mi:02}:00"),
                _ => toml_string(&format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{tail}")),
            })
    }

    /// Any TOML value on one line: strings, integers of every radix and beyond 64 bits,
    /// decimals, booleans, dates, and arrays and inline tables of them.
    fn toml_value() -> impl Strategy<Value = String> {
        const WORDS: &[&str] = &[
            "\"head\"",
            "\"beginning\"",
            "\"never\"",
            "\"on-failure\"",
            "\"alpha\"",
            "\"alpha.wasm\"",
            "\".\"",
            "\"\"",
            "\"0ms\"",
            "\"500ms\"",
            "\"1h 1ms\"",
            "\"18446744073709551615s\"",
            "\"99999999999999999999y\"",
            "-1",
            "0",
            "1",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "0x7fffffffffffffff",
            "0xffffffffffffffff",
            "0o777",
            "0b101",
            "1_000",
            "+5",
            "-0",
            "1.5",
            "-0.0",
            "inf",
            "nan",
            "1e400",
            "true",
            "false",
        ];
        let leaf = prop_oneof![
            prop::sample::select(WORDS).prop_map(str::to_owned),
            any::<String>().prop_map(|s| toml_string(&s)),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            toml_date(),
        ];
        let key = prop::sample::select(
            &[
                "time",
                "REGION",
                "\"a=b\"",
                "\"\"",
                "\"\\u0000\"",
                "memory_mib",
                "x",
            ][..],
        );
        leaf.prop_recursive(2, 12, 3, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..3).prop_map(|items| format!("[{}]", items.join(", "))),
                vec((key.clone(), inner), 0..3).prop_map(|pairs| {
                    let pairs: Vec<String> =
                        pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", pairs.join(", "))
                }),
            ]
        })
    }

    /// Text made mostly of a manifest's lines, in any order and number, with pieces of lines and
    /// stray characters among them: enough of it is TOML to reach the checks of entries, keys
    /// and values (duplicates, unknown keys, keys outside an entry).
    fn manifest_like_text(sha: String) -> impl Strategy<Value = String> {
        const LINES: &[&str] = &[
            "[[plugin]]",
            "[plugin.limits]",
            "[plugin]",
            "[other]",
            "name = \"alpha\"",
            "name = \"beta\"",
            "name = \".hidden\"",
            "component = \"alpha.wasm\"",
            "component = \"missing.wasm\"",
            "args = [\"-v\", 1]",
            "env = { REGION = \"eu\", \"\" = \"x\" }",
            "start = \"head\"",
            "start = -1",
            "start = { time = 1979-05-27T07:32:00Z }",
            "restart = \"never\"",
            "limits = 5",
            "memory_mib = 64",
            "memory_mib = 0",
            "cpu = \"1s\"",
            "cpu = \"99999999999999999999h\"",
            "handles = 1",
            "unknown = true",
            "",
            "# a comment",
        ];
        const PIECES: &[&str] = &[
            " = ", "\"", "'", "\"\"\"", "{", "}", "[", "]", ",", ".", "#", "\r", "é", "😀",
            "\u{7f}", "\0",
        ];
        let sha_line = format!("sha256 = \"{sha}\"");
        let lines = vec(
            prop_oneof![
                8 => prop::sample::select(LINES).prop_map(|line| format!("{line}\n")),
                2 => Just(format!("{sha_line}\n")),
                1 => prop::sample::select(PIECES).prop_map(str::to_owned),
                1 => any::<char>().prop_map(String::from),
            ],
            0..14,
        );
        // Most start inside an entry, as a manifest does.
        (prop::bool::weighted(0.8), lines).prop_map(|(in_entry, lines)| {
            let start = if in_entry { "[[plugin]]\n" } else { "" };
            start.to_owned() + &lines.concat()
        })
    }

    /// An error as the contract of [`ManifestError`] says: the path, then the line, which is
    /// one of the text's. Returns the line.
    fn check_error(path: &Path, text: &str, error: &ManifestError) -> Result<usize, TestCaseError> {
        let ManifestError::Invalid { line, .. } = error else {
            return Err(TestCaseError::fail(format!(
                "parsing reads no file, yet: {error:?}"
            )));
        };
        let shown = error.to_string();
        prop_assert!(
            shown.starts_with(&format!("{}:{line}: ", path.display())),
            "{shown}"
        );
        prop_assert!(
            (1..=text.split('\n').count()).contains(line),
            "line {line}: {shown}"
        );
        Ok(*line)
    }

    #[test]
    fn the_manifest_the_properties_vary_is_valid() {
        let f = fixture();
        let specs =
            manifest::parse(&f.manifest, &valid_manifest(&f.sha).join("\n"), &f.state).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "alpha");
        assert_eq!(specs[0].limits.memory_bytes, 64 << 20);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_text_is_a_list_of_plugins_or_an_error_at_one_of_its_lines(
            text in prop_oneof![1 => any::<String>(), 3 => manifest_like_text(pulsewatch::sha256_hex(COMPONENT))],
        ) {
            let f = fixture();
            match manifest::parse(&f.manifest, &text, &f.state) {
                // The one component there is, pinned by its digest, is all a plugin can be.
                Ok(specs) => {
                    for spec in specs {
                        prop_assert!(spec.component.ends_with("alpha.wasm"), "{spec:?}");
                        prop_assert_eq!(spec.sha256.as_ref(), Some(&f.sha));
                    }
                }
                Err(e) => {
                    check_error(&f.manifest, &text, &e)?;
                }
            }
        }

        /// The value is on one line, so any error about it is on that line, and (but for the
        /// name, which it may be) names the plugin and the key.
        #[test]
        fn any_value_for_any_key_is_taken_or_refused_at_its_line_naming_the_plugin_and_key(
            (key, line) in prop::sample::select(&KEYS[..]),
            value in toml_value(),
        ) {
            let f = fixture();
            let mut lines = valid_manifest(&f.sha);
            lines[line - 1] = format!("{} = {value}", key.trim_start_matches("limits."));
            let text = lines.join("\n");
            let Err(error) = manifest::parse(&f.manifest, &text, &f.state) else {
                return Ok(());
            };
            let at = check_error(&f.manifest, &text, &error)?;
            let shown = error.to_string();
            if toml::de::DeTable::parse(&text).is_err() {
                // Not TOML: the parser's own message, at a line of the text.
                return Ok(());
            }
            // A path that exists ("." or "/") is read as the component, and its digest fails.
            let (at_line, about) = match key {
                "component" if at == 4 => (4, "sha256"),
                _ => (line, key),
            };
            prop_assert_eq!(at, at_line, "{}", shown);
            if key == "name" {
                // The name may be what is wrong, so the error cannot go by it.
                prop_assert!(shown.contains("name: "), "{shown}");
            } else {
                let about = format!("plugin \"alpha\": {about}");
                prop_assert!(shown.contains(&about), "{about:?} in {shown}");
            }
        }
    }
}

/// The JSON-lines importer's parser and the writer `tail` uses.
mod json_lines {
    use super::*;
    use pulsewatch::Event;
    use pulsewatch::jsonl::{JsonLineError, parse_line, write_event};
    use uuid::Uuid;

    /// `change` as `tail` writes it.
    fn written(change: &Change) -> String {
        let mut out = Vec::new();
        let event = Event {
            seq: 7,
            change: change.clone(),
        };
        write_event(&mut out, &event, None).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A change written and read back is the same change, from one line.
    fn check_round_trip(change: &Change) -> Result<(), TestCaseError> {
        let line = written(change);
        let Some(body) = line.strip_suffix('\n') else {
            return Err(TestCaseError::fail(format!("no newline: {line:?}")));
        };
        prop_assert!(!body.contains('\n'), "more than one line: {line:?}");
        match parse_line(body) {
            Ok(read) => prop_assert_eq!(&read, change, "{}", line),
            Err(e) => prop_assert!(false, "{line:?} read back as {e}"),
        }
        Ok(())
    }

    /// A JSON value's text with `spacing` (one of them, chosen each time) between the tokens
    /// of its arrays and objects, never around the whole.
    fn json_text(spacing: &'static [&'static str]) -> impl Strategy<Value = String> {
        let ws = prop::sample::select(spacing);
        let leaf = prop_oneof![
            prop::sample::select(&["null", "true", "false", "0", "-1", "1.5e300", "\"\""][..])
                .prop_map(str::to_owned),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(3, 16, 4, move |inner| {
            let item = (ws.clone(), inner, ws.clone()).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
            prop_oneof![
                vec(item.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                vec((any::<String>(), item), 0..4).prop_map(|pairs| {
                    let pairs: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                        .collect();
                    format!("{{{}}}", pairs.join(","))
                }),
            ]
        })
    }

    /// No white space, as `serde_json` writes JSON.
    const COMPACT: &[&str] = &[""];

    /// Text made of JSON tokens and the names and values of an event's fields.
    fn json_like_text() -> impl Strategy<Value = String> {
        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "\\u0000",
            "null",
            "1",
            "-1",
            "\"kind\"",
            "\"created\"",
            "\"entity\"",
            "\"collective\"",
            "\"00000000-0000-0000-0000-00000000000a\"",
            "\"timestamp_ms\"",
            "\"payload\"",
            "\"payload_hex\"",
        ];
        vec(prop::sample::select(TOKENS), 0..30).prop_map(|tokens| tokens.concat())
    }

    /// Edits to a line: where, which (delete, replace, insert) and with what character.
    fn edits() -> impl Strategy<Value = Vec<(Index, u8, char)>> {
        let c = prop_oneof![
            any::<char>(),
            prop::sample::select(&['"', '{', '}', ':', ',', '\\', '0', 'e', '-'][..]),
        ];
        vec((any::<Index>(), 0..3u8, c), 1..4)
    }

    /// A change with `payload`.
    fn change_with(payload: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Change> {
        (any_change(), payload).prop_map(|(change, payload)| change.with_payload(payload))
    }

    /// A field of an event line given a value of its own.
    #[derive(Debug, Clone)]
    enum Field {
        Kind(String),
        Entity(String),
        Collective(String),
        Timestamp(Stamp),
        Payload(String),
        PayloadHex(String),
        BothPayloads,
        Unknown(String),
    }

    /// A `timestamp_ms` value, by what it is: `Other` is JSON of another type.
    #[derive(Debug, Clone)]
    enum Stamp {
        Whole(u64),
        Null,
        Negative(i64),
        TooLarge(u128),
        Other(&'static str),
    }

    fn uuid_text() -> impl Strategy<Value = String> {
        (any::<u128>(), 0..6, any::<Index>(), any::<char>()).prop_map(|(id, form, at, c)| {
            let id = Uuid::from_u128(id);
            match form {
                0 => id.hyphenated().to_string(),
                1 => id.simple().to_string(),
                2 => id.urn().to_string(),
                3 => id.braced().to_string().to_uppercase(),
                // One character replaced: mostly not a UUID any more.
                _ => {
                    let mut chars: Vec<char> = id.hyphenated().to_string().chars().collect();
                    let at = at.index(chars.len());
                    chars[at] = c;
                    chars.into_iter().collect()
                }
            }
        })
    }

    fn field() -> impl Strategy<Value = Field> {
        let kind = prop_oneof![
            prop::sample::select(
                &[
                    "created", "updated", "archived", "deleted", "Created", "moved", ""
                ][..]
            )
            .prop_map(str::to_owned),
            any::<String>(),
        ];
        let stamp = prop_oneof![
            prop_oneof![Just(0), Just(u64::MAX), any::<u64>()].prop_map(Stamp::Whole),
            Just(Stamp::Null),
            (i64::MIN..0).prop_map(Stamp::Negative),
            (u128::from(u64::MAX) + 1..).prop_map(Stamp::TooLarge),
            prop::sample::select(&["-0", "1.5", "1e3", "\"5\"", "true", "[]", "{}"][..])
                .prop_map(Stamp::Other),
        ];
        let hex = prop_oneof![
            vec(any::<u8>(), 0..20).prop_map(|b| b.iter().map(|b| format!("{b:02X}")).collect()),
            "[0-9a-fA-F]{0,9}",
            "[0-9a-zA-Z+é ]{0,9}",
            any::<String>(),
        ];
        prop_oneof![
            kind.prop_map(Field::Kind),
            prop_oneof![uuid_text(), any::<String>()].prop_map(Field::Entity),
            uuid_text().prop_map(Field::Collective),
            stamp.prop_map(Field::Timestamp),
            json_text(&["", " ", "\t", "\n", "\r\n"]).prop_map(Field::Payload),
            hex.prop_map(Field::PayloadHex),
            Just(Field::BothPayloads),
            "[a-z_]{1,12}"
                .prop_filter("a field of an event", |key| !FIELDS.contains(&key.as_str()))
                .prop_map(Field::Unknown),
        ]
    }

    /// The fields a line may hold.
    const FIELDS: [&str; 7] = [
        "seq",
        "kind",
        "entity",
        "collective",
        "timestamp_ms",
        "payload",
        "payload_hex",
    ];

    /// The bytes `hex` stands for, if it is hex.
    fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
        Some((0..hex.len()).step_by(2).map(byte).collect())
    }

    const ENTITY: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    const COLLECTIVE: &str = "00000000-0000-0000-0000-00000000000a";

    /// A valid line with `field` set as given.
    fn line_with(field: &Field) -> String {
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let mut fields: Vec<(&str, String)> = vec![
            ("kind", json("created")),
            ("entity", json(ENTITY)),
            ("collective", json(COLLECTIVE)),
            ("timestamp_ms", "5".to_owned()),
            ("payload", "{\"a\":[1]}".to_owned()),
        ];
        let set = |fields: &mut Vec<(&str, String)>, key: &str, value: String| {
            if let Some(field) = fields.iter_mut().find(|(k, _)| *k == key) {
                field.1 = value;
            }
        };
        match field {
            Field::Kind(kind) => set(&mut fields, "kind", json(kind)),
            Field::Entity(id) => set(&mut fields, "entity", json(id)),
            Field::Collective(id) => set(&mut fields, "collective", json(id)),
            Field::Timestamp(stamp) => {
                let text = match stamp {
                    Stamp::Whole(n) => n.to_string(),
                    Stamp::Null => "null".to_owned(),
                    Stamp::Negative(n) => n.to_string(),
                    Stamp::TooLarge(n) => n.to_string(),
                    Stamp::Other(text) => (*text).to_owned(),
                };
                set(&mut fields, "timestamp_ms", text);
            }
            Field::Payload(text) => set(&mut fields, "payload", text.clone()),
            Field::PayloadHex(hex) => {
                fields.retain(|(k, _)| *k != "payload");
                fields.push(("payload_hex", json(hex)));
            }
            Field::BothPayloads => fields.push(("payload_hex", json("00"))),
            Field::Unknown(key) => fields.push((key, "1".to_owned())),
        }
        let fields: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", json(k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any bytes, and any compact JSON.
        #[test]
        fn a_written_event_reads_back_as_the_same_change(
            change in change_with(
                prop_oneof![vec(any::<u8>(), 0..100), json_text(COMPACT).prop_map(String::into_bytes)],
            ),
        ) {
            check_round_trip(&change)?;
        }

        /// Whatever a line holds, the parser gives a change or says why not; and a change it
        /// gives is one `tail` writes so that it reads back the same.
        #[test]
        fn any_text_is_a_change_that_round_trips_or_an_error(
            text in prop_oneof![any::<String>(), json_like_text()],
        ) {
            if let Ok(change) = parse_line(&text) {
                check_round_trip(&change)?;
            }
        }

        /// A valid line with characters deleted, inserted or replaced anywhere.
        #[test]
        fn a_damaged_line_is_a_change_that_round_trips_or_an_error(
            change in any_change(),
            edits in edits(),
        ) {
            let mut chars: Vec<char> = written(&change).trim_end().chars().collect();
            for (at, edit, c) in edits {
                let at = at.index(chars.len() + 1);
                match edit {
                    0 if at < chars.len() => { chars.remove(at); }
                    1 if at < chars.len() => chars[at] = c,
                    _ => chars.insert(at, c),
                }
            }
            let line: String = chars.into_iter().collect();
            if let Ok(change) = parse_line(&line) {
                check_round_trip(&change)?;
            }
        }

        /// Each field is read as the module documentation of `pulsewatch::jsonl` says, whatever
        /// value it is given.
        #[test]
        fn each_field_of_a_line_is_read_or_refused_as_documented(field in field()) {
            let line = line_with(&field);
            let result = parse_line(&line);
            let ok = |result: &Result<Change, JsonLineError>| -> Result<Change, TestCaseError> {
                match result {
                    Ok(change) => Ok(change.clone()),
                    Err(e) => Err(TestCaseError::fail(format!("{line} refused: {e}"))),
                }
            };
            let refused = |result: &Result<Change, JsonLineError>| match result {
                Ok(change) => Err(TestCaseError::fail(format!("{line} read as {change:?}"))),
                Err(e) => Ok(e.to_string()),
            };
            match &field {
                Field::Kind(kind) => match ChangeKind::ALL.iter().find(|k| k.as_str() == kind) {
                    Some(&k) => prop_assert_eq!(ok(&result)?.kind, k),
                    None => { refused(&result)?; }
                },
                Field::Entity(id) => match Uuid::parse_str(id) {
                    Ok(id) => prop_assert_eq!(ok(&result)?.entity, id.as_u128()),
                    Err(_) => { refused(&result)?; }
                },
                Field::Collective(id) => match Uuid::parse_str(id) {
                    Ok(id) => prop_assert_eq!(ok(&result)?.collective, id.as_u128()),
                    Err(_) => { refused(&result)?; }
                },
                Field::Timestamp(Stamp::Whole(n)) => prop_assert_eq!(ok(&result)?.timestamp_ms, *n),
                // No stamp: the time of reading, which is after the test started.
                Field::Timestamp(Stamp::Null) => prop_assert!(ok(&result)?.timestamp_ms > 1_700_000_000_000),
                Field::Timestamp(_) => { refused(&result)?; }
                Field::Payload(text) => prop_assert_eq!(ok(&result)?.payload, text.as_bytes()),
                Field::PayloadHex(hex) => match hex_bytes(hex) {
                    Some(bytes) => prop_assert_eq!(ok(&result)?.payload, bytes),
                    None => prop_assert!(matches!(result, Err(JsonLineError::Hex(_))), "{line}: {result:?}"),
                },
                Field::BothPayloads => prop_assert!(matches!(result, Err(JsonLineError::BothPayloads)), "{result:?}"),
                Field::Unknown(_) => prop_assert!(refused(&result)?.contains("unknown field"), "{result:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// JSON with white space inside it.
        #[test]
        fn a_written_event_with_white_space_inside_its_json_payload_reads_back(
            change in change_with(
                json_text(&["", " ", "\t", "\r", "  "])
                    .prop_map(String::into_bytes),
            ),
        ) {
            check_round_trip(&change)?;
        }
    }

    /// `"payload":null` is the payload `null`, as any JSON value is its text (it once read as no
    /// payload, found by these tests).
    #[test]
    fn a_payload_of_json_null_reads_back_as_itself() {
        let change = Change::new(ChangeKind::Updated, 1, 2).with_payload(*b"null");
        let line = written(&change);
        assert_eq!(parse_line(line.trim_end()).unwrap(), change, "{line}");
    }

    /// A payload that is JSON with white space around it is written so that it reads back
    /// byte for byte (once the white space was lost, found by these tests).
    #[test]
    fn a_payload_of_json_with_white_space_around_it_reads_back_byte_for_byte() {
        let change = Change::new(ChangeKind::Updated, 1, 2).with_payload(*b" true\n");
        let line = written(&change);
        assert_eq!(parse_line(line.trim_end()).unwrap(), change, "{line}");
    }

    /// An event is one line, whatever its payload holds (a new line inside a JSON payload once
    /// split it, found by these tests).
    #[test]
    fn a_written_event_with_a_new_line_inside_its_json_payload_is_one_line() {
        let change = Change::new(ChangeKind::Updated, 1, 2).with_payload(*b"[1,\n2]");
        let line = written(&change);
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}

/// The feed natively: every read of `Log` with any cursor, limit and poll limits, on logs of the
/// shapes that matter.
mod native_feed {
    use super::*;
    use crate::common::change;
    use proptest::test_runner::{Config, TestRunner};
    use pulsewatch::{Event, Log, PollLimits, ReadError};
    use pulsewatch_log::codec::Entries;
    use std::path::Path;
    use std::time::Duration;

    /// The stamp of `common::change(0)`; each next change is a millisecond later.
    const FIRST_STAMP: u64 = 1_700_000_000_000;

    /// A log and what was appended to it, in order.
    struct Written {
        log: Log,
        changes: Vec<Change>,
    }

    impl Written {
        fn head(&self) -> u64 {
            self.changes.len() as u64
        }
    }

    /// An empty log, one of one event, and one of 300 events appended in groups of uneven
    /// sizes, every tenth with a payload of 9,000 bytes: reads cross stored batches (32 KiB
    /// each) and small byte budgets bind.
    fn logs(dir: &Path) -> Vec<Written> {
        let shapes: [&[u64]; 3] = [&[], &[1], &[1, 7, 30, 12, 100, 150]];
        let mut logs = Vec::new();
        for (n, groups) in shapes.into_iter().enumerate() {
            let log = Log::create(dir.join(format!("{n}.redb"))).unwrap();
            let mut changes = Vec::new();
            for &group in groups {
                let from = changes.len() as u64;
                let batch: Vec<Change> = (from..from + group)
                    .map(|i| {
                        let size = if i % 10 == 9 {
                            9_000
                        } else {
                            i as usize * 37 % 50
                        };
                        change(i).with_payload(vec![b'x'; size])
                    })
                    .collect();
                log.append_batch(&batch).unwrap();
                changes.extend(batch);
            }
            logs.push(Written { log, changes });
        }
        logs
    }

    fn read<T>(result: Result<T, ReadError>) -> Result<T, TestCaseError> {
        result.map_err(|e| TestCaseError::fail(format!("a sound log failed to read: {e}")))
    }

    /// The seqs wit/feed.wit says a poll returns: those after `since`, no more than `limit`
    /// lowered to `max_events`, ending once the payloads reach `max_bytes` or before one that
    /// would take them past it, but never before the first.
    fn expected(changes: &[Change], since: u64, limit: u32, limits: &PollLimits) -> Vec<u64> {
        let mut seqs = Vec::new();
        let Some(first) = since.checked_add(1) else {
            return seqs;
        };
        let mut bytes = 0usize;
        for seq in first..=changes.len() as u64 {
            let size = changes[seq as usize - 1].payload.len();
            let full = seqs.len() == limit.min(limits.max_events) as usize;
            let spent = bytes >= limits.max_bytes || bytes.saturating_add(size) > limits.max_bytes;
            if full || (!seqs.is_empty() && spent) {
                break;
            }
            bytes += size;
            seqs.push(seq);
        }
        seqs
    }

    /// Every read from `since` with `limit` says what the contract says, typed and packed alike.
    fn check_reads(
        w: &Written,
        since: u64,
        limit: u32,
        limits: &PollLimits,
    ) -> Result<(), TestCaseError> {
        let head = w.head();
        let seqs = |events: &[Event]| events.iter().map(|e| e.seq).collect::<Vec<_>>();

        // The default limits never bind on these logs but for the count: the plain reading.
        let batch = read(w.log.poll(since, limit))?;
        let n = u64::from(limit).min(head.saturating_sub(since));
        let plain: Vec<u64> = (1..=n).map(|i| since + i).collect();
        prop_assert_eq!(seqs(&batch.events), plain);
        prop_assert_eq!(batch.last_seq, since + n);
        for event in &batch.events {
            prop_assert_eq!(&event.change, &w.changes[event.seq as usize - 1]);
        }

        let want = expected(&w.changes, since, limit, limits);
        let batch = read(w.log.poll_within(since, limit, limits))?;
        prop_assert_eq!(seqs(&batch.events), want.clone());
        prop_assert_eq!(batch.last_seq, want.last().copied().unwrap_or(since));

        let mut packed = Vec::new();
        let read_packed = read(w.log.poll_packed(since, limit, limits, &mut packed))?;
        prop_assert_eq!(read_packed.events, want.len());
        prop_assert_eq!(read_packed.last_seq, batch.last_seq);
        let mut entries = Entries::new(&packed);
        let unpacked: Vec<Event> = entries.by_ref().map(|e| e.to_event()).collect();
        prop_assert_eq!(entries.error(), None);
        prop_assert_eq!(unpacked, batch.events);

        prop_assert_eq!(read(w.log.head())?, head);
        // A zero timeout answers at once, with the head whether or not it passed `since`.
        prop_assert_eq!(read(w.log.wait(since, Duration::ZERO))?, head);
        Ok(())
    }

    /// Stamps rise with seqs here, so the last seq before a time is the count of events before it.
    fn check_seq_at(w: &Written, timestamp_ms: u64) -> Result<(), TestCaseError> {
        let before = w
            .changes
            .iter()
            .take_while(|c| c.timestamp_ms < timestamp_ms)
            .count();
        prop_assert_eq!(read(w.log.seq_at(timestamp_ms))?, before as u64);
        Ok(())
    }

    #[test]
    fn every_edge_of_cursor_and_limit_reads_exactly_what_the_contract_says() {
        let dir = tempfile::tempdir().unwrap();
        for w in logs(dir.path()) {
            let head = w.head();
            let limits = [
                PollLimits::default(),
                PollLimits {
                    max_events: 0,
                    ..PollLimits::default()
                },
                PollLimits {
                    max_events: 1,
                    max_bytes: 0,
                },
                PollLimits {
                    max_events: u32::MAX,
                    max_bytes: usize::MAX,
                },
            ];
            for since in [
                0,
                1,
                head.saturating_sub(1),
                head,
                head + 1,
                u64::MAX - 1,
                u64::MAX,
            ] {
                for limit in [0, 1, 2, head as u32, u32::MAX] {
                    for limits in &limits {
                        check_reads(&w, since, limit, limits).unwrap_or_else(|e| {
                            panic!("head {head}, since {since}, limit {limit}, {limits:?}: {e}")
                        });
                    }
                }
            }
            for stamp in [0, 1, FIRST_STAMP, FIRST_STAMP + head, u64::MAX] {
                check_seq_at(&w, stamp)
                    .unwrap_or_else(|e| panic!("head {head}, seq-at {stamp}: {e}"));
            }
            assert_eq!(w.log.seq_at(0).unwrap(), 0);
            assert_eq!(w.log.seq_at(u64::MAX).unwrap(), head);
        }
    }

    /// One set of logs for all cases: a log costs a file and commits, a read a transaction.
    #[test]
    fn any_cursor_limit_and_poll_limits_read_exactly_what_the_contract_says() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path());
        let since = prop_oneof![0u64..=305, (u64::MAX - 2)..=u64::MAX, any::<u64>()];
        let limit = prop_oneof![0u32..=305, Just(u32::MAX), any::<u32>()];
        let limits = (
            prop_oneof![Just(0u32), 1u32..=305, Just(u32::MAX), any::<u32>()],
            prop_oneof![0usize..20_000, Just(usize::MAX), any::<usize>()],
        )
            .prop_map(|(max_events, max_bytes)| PollLimits {
                max_events,
                max_bytes,
            });
        let stamp = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            FIRST_STAMP - 2..FIRST_STAMP + 305,
            any::<u64>()
        ];
        let config = Config {
            source_file: Some(file!()),
            ..Config::with_cases(1_000)
        };
        let result = TestRunner::new(config).run(
            &(0..logs.len(), since, limit, limits, stamp),
            |(n, since, limit, limits, stamp)| {
                check_reads(&logs[n], since, limit, &limits)?;
                check_seq_at(&logs[n], stamp)
            },
        );
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// The feed from a guest: `feed-edges` calls every feed function with edge arguments, in process
/// and in a worker process, and prints each answer; each must be the one wit/feed.wit gives.
mod from_a_guest {
    use crate::common::{Harness, log_with};
    use pulsewatch::{Outcome, PollLimits, Stream};

    /// Past the host's clamp of 10,000 events, so that a limit of `u32::MAX` meets it.
    const EVENTS: u64 = 12_000;

    /// The lines feed-edges prints on a log of `head` events of `common::change`, by the contract.
    fn expected_lines(head: u64) -> Vec<String> {
        let clamp = u64::from(PollLimits::default().max_events);
        let mut lines = vec![format!("head -> ok {head}")];
        for since in [0, 1, head, head + 1, u64::MAX] {
            for limit in [0, 1, u32::MAX] {
                // Payloads of a few bytes: the byte budget never ends a batch here.
                let n = u64::from(limit).min(clamp).min(head.saturating_sub(since));
                let answer = match n {
                    0 => format!("ok 0 events, seq {since}"),
                    n => format!(
                        "ok {n} events, seq {0}, seqs {1}..={0}",
                        since + n,
                        since + 1
                    ),
                };
                for call in ["poll", "poll-packed"] {
                    lines.push(format!("{call} {since} {limit} -> {answer}"));
                }
            }
        }
        // Every stamp is from 2023: none before 0 or 1 ms, all before u64::MAX.
        lines.push("seq-at 0 -> ok 0".into());
        lines.push("seq-at 1 -> ok 0".into());
        lines.push(format!("seq-at {} -> ok {head}", u64::MAX));
        // Without --follow, the feed closes to a plugin that has caught up.
        lines.push(format!("wait {} 0 -> err Closed", u64::MAX));
        lines.push(format!("wait 0 0 -> ok {head}"));
        lines
    }

    fn check(harness: &Harness, outcome: &Outcome) {
        assert!(outcome.result.is_ok(), "{outcome:?}");
        let printed = harness.lines.of("feed-edges", Stream::Stdout);
        let expected = expected_lines(EVENTS);
        for (printed, expected) in printed.iter().zip(&expected) {
            assert_eq!(printed, expected);
        }
        assert_eq!(
            printed.len(),
            expected.len(),
            "one line per call: {printed:#?}"
        );
        assert_eq!(
            harness.lines.of("feed-edges", Stream::Stderr),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_guest_calling_every_feed_function_at_its_edges_gets_the_contracts_answers() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with(dir.path(), EVENTS);
        let harness = Harness::new(dir.path());
        let outcome = harness
            .run_all(&[harness.load("feed-edges")], &log)
            .remove(0);
        check(&harness, &outcome);
    }

    #[test]
    fn a_guest_in_a_worker_process_gets_the_same_answers_at_the_edges() {
        let dir = tempfile::tempdir().unwrap();
        let _log = log_with(dir.path(), EVENTS);
        let harness = Harness::new(dir.path());
        let outcome = harness
            .supervise(
                &[harness.spec("feed-edges")],
                &dir.path().join("events.redb"),
            )
            .remove(0);
        check(&harness, &outcome);
    }
}
