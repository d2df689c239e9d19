//! What a provider component and the host that bundles it agree on: where the provider finds the
//! snapshot it serves. The path is stored in the provider's data as [`DB_PATH_MARKER`] followed
//! by the path and NUL bytes, [`DB_PATH_SLOT`] bytes in all, so that `pulsewatch bundle` can set
//! another path in the compiled component by rewriting those bytes in place.

/// The bytes that precede the path. They appear once in the provider component.
pub const DB_PATH_MARKER: &[u8] = b"pulsewatch-provider-db-path=";

/// The bytes reserved for the marker and the path, NUL-padded.
pub const DB_PATH_SLOT: usize = 512;

/// The longest path that fits the slot (one NUL always ends it).
pub const MAX_DB_PATH: usize = DB_PATH_SLOT - DB_PATH_MARKER.len() - 1;

/// Where the provider looks unless told otherwise: a directory preopened as `/data`.
pub const DEFAULT_DB_PATH: &str = "/data/events.redb";

/// The slot holding `path`, or `None` if it does not fit or holds a NUL.
pub const fn db_path_slot(path: &[u8]) -> Option<[u8; DB_PATH_SLOT]> {
    if path.len() > MAX_DB_PATH {
        return None;
    }
    let mut slot = [0u8; DB_PATH_SLOT];
    let mut i = 0;
    while i < DB_PATH_MARKER.len() {
        slot[i] = DB_PATH_MARKER[i];
        i += 1;
    }
    let mut j = 0;
    while j < path.len() {
        if path[j] == 0 {
            return None;
        }
        slot[i + j] = path[j];
        j += 1;
    }
    Some(slot)
}

/// The path a slot holds.
pub fn db_path_in(slot: &[u8; DB_PATH_SLOT]) -> String {
    let value = &slot[DB_PATH_MARKER.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_round_trips_its_path_and_refuses_what_does_not_fit() {
        let slot = db_path_slot(b"/data/snap.redb").unwrap();
        assert!(slot.starts_with(DB_PATH_MARKER));
        assert_eq!(db_path_in(&slot), "/data/snap.redb");
        assert!(db_path_slot(&[b'a'; MAX_DB_PATH]).is_some());
        assert!(db_path_slot(&[b'a'; MAX_DB_PATH + 1]).is_none());
        assert!(db_path_slot(b"/data/\0x").is_none());
    }
}
