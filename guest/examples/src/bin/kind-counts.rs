//! Counts changes per collective and kind, and prints the totals when the feed closes.
//!
//! The counts are committed with the cursor after every batch, so a restarted run continues
//! the totals instead of starting over.

use pulsewatch_guest::{Batch, ChangeKind, Error, Plugin};
use std::collections::BTreeMap;

/// Counts indexed by [`ChangeKind`] in declaration order.
type Counts = [u64; 4];

/// Counts are indexed by the kind's position in the WIT enum (wit-bindgen makes it `repr(u8)`).
fn index(kind: ChangeKind) -> usize {
    kind as usize
}

const KINDS: [ChangeKind; 4] = [
    ChangeKind::Created,
    ChangeKind::Updated,
    ChangeKind::Archived,
    ChangeKind::Deleted,
];

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct KindCounts {
    /// Keyed by the collective's UUID, so the state reads well as JSON.
    per_collective: BTreeMap<String, Counts>,
}

fn line(counts: &Counts) -> String {
    KINDS
        .iter()
        .map(|&k| format!("{}={}", k.as_str(), counts[index(k)]))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Plugin for KindCounts {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        Ok(state
            .map(serde_json::from_slice)
            .transpose()?
            .unwrap_or_default())
    }

    fn process(&mut self, events: &Batch) -> Result<(), Error> {
        for event in events {
            let counts = self
                .per_collective
                .entry(event.collective().to_string())
                .or_default();
            counts[index(event.kind())] += 1;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("counts serialize")
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        let mut totals = Counts::default();
        for (collective, counts) in &self.per_collective {
            println!("collective {collective}: {}", line(counts));
            for (total, n) in totals.iter_mut().zip(counts) {
                *total += n;
            }
        }
        println!("totals: {}", line(&totals));
        println!("cursor: {cursor}");
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run::<KindCounts>()
}
