//! The stored form of an event: a versioned envelope around a bincode record.
//!
//! Byte 0 is the envelope version; the rest is the record in that version's encoding. The
//! sequence number is not in the record: it is the key the record is stored under. A reader
//! that meets a version it does not know reports it instead of guessing, so a newer writer can
//! change the record without older readers misreading it.

use crate::event::Change;

/// The envelope version this build writes.
pub const ENVELOPE_V1: u8 = 1;

/// bincode's standard configuration: little-endian, variable-length integers. Fixed forever for
/// [`ENVELOPE_V1`]; a different configuration needs a new envelope version.
const CONFIG: bincode::config::Configuration = bincode::config::standard();

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record is empty: not even an envelope version.
    #[error("empty record")]
    Empty,
    /// The envelope version is not one this build can read.
    #[error("unknown envelope version {0} (this build reads version {ENVELOPE_V1})")]
    UnknownVersion(u8),
    /// The record body does not decode.
    #[error("malformed record: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    /// The body decoded but bytes were left over.
    #[error("malformed record: {0} trailing bytes")]
    Trailing(usize),
}

/// Appends the stored form of `change` to `out`.
pub fn encode_into(change: &Change, out: &mut Vec<u8>) {
    out.push(ENVELOPE_V1);
    // Writing to a Vec cannot fail and every field of Change is encodable.
    bincode::serde::encode_into_std_write(change, out, CONFIG)
        .expect("encoding a Change into a Vec cannot fail");
}

/// The stored form of `change`.
pub fn encode(change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + change.payload.len());
    encode_into(change, &mut out);
    out
}

/// Decodes a stored record.
pub fn decode(bytes: &[u8]) -> Result<Change, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != ENVELOPE_V1 {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (change, used) = bincode::serde::decode_from_slice(body, CONFIG)?;
    if used != body.len() {
        return Err(DecodeError::Trailing(body.len() - used));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ChangeKind;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = ChangeKind> {
        prop::sample::select(ChangeKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn round_trips(kind in kind(), entity: u128, collective: u128, timestamp_ms: u64,
                       payload in prop::collection::vec(any::<u8>(), 0..512)) {
            let change = Change { kind, entity, collective, timestamp_ms, payload };
            prop_assert_eq!(decode(&encode(&change)).unwrap(), change);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn rejects_unknown_version_empty_and_trailing_bytes() {
        let mut bytes = encode(&Change::new(ChangeKind::Created, 1, 2));
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(DecodeError::Trailing(1))));
        bytes[0] = 2;
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::UnknownVersion(2))
        ));
    }
}
