//! A plugin as it was built against `pulse:watch@0.2.0` (wit/feed.wit here is that contract,
//! frozen): it counts events per kind with `poll` and `poll-packed` alternately, keeps its
//! cursor in `/state/cursor`, and prints the counts when the feed closes. A host that serves a
//! newer feed must still run it unmodified.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "pulse:watch/plugin@0.2.0",
    });
}

use bindings::pulse::watch::feed;

const CURSOR: &str = "/state/cursor";

fn main() -> Result<(), String> {
    let mut cursor: u64 = std::fs::read_to_string(CURSOR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut counts = [0u64; 4];
    let mut packed = false;
    loop {
        let got = if packed {
            let (bytes, last) = feed::poll_packed(cursor, 500).map_err(|e| format!("{e:?}"))?;
            // Kind is byte 8 of each entry; the payload length at 49..57.
            let mut at = 0;
            while at < bytes.len() {
                counts[usize::from(bytes[at + 8])] += 1;
                let len = u64::from_le_bytes(bytes[at + 49..at + 57].try_into().unwrap());
                at += 57 + len as usize;
            }
            (!bytes.is_empty()).then_some(last)
        } else {
            let (events, last) = feed::poll(cursor, 500).map_err(|e| format!("{e:?}"))?;
            for event in &events {
                counts[event.kind as usize] += 1;
            }
            (!events.is_empty()).then_some(last)
        };
        packed = !packed;
        match got {
            Some(last) => {
                cursor = last;
                std::fs::write(CURSOR, cursor.to_string()).map_err(|e| e.to_string())?;
            }
            None => match feed::wait(cursor, 1000) {
                Ok(_) => {}
                Err(feed::WaitError::Closed) => break,
            },
        }
    }
    let [created, updated, archived, deleted] = counts;
    println!(
        "feed 0.2.0: created={created} updated={updated} archived={archived} deleted={deleted} cursor={cursor}"
    );
    Ok(())
}
