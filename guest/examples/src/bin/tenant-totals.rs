//! Keeps running totals per tenant (collective) and derives one event per input event into the
//! output log `totals`: the tenant's totals after that event, as JSON, with the tenant as both
//! entity and collective. Another plugin can read `totals.redb` like any log.
//!
//! Exactly once: the derived events, the cursor and the totals are committed by the host in one
//! step, so a crash at any moment neither loses nor repeats a tenant's update.

use pulsewatch_guest::{Batch, ChangeKind, Emitter, Error, Transform};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Events per kind, in the WIT enum's order, then the sum of `amount_cents` in the payloads.
#[derive(Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Totals {
    kinds: [u64; 4],
    amount_cents: i64,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct TenantTotals {
    /// By the tenant's UUID.
    tenants: BTreeMap<u128, Totals>,
}

/// The `amount_cents` a payload carries, if it is a JSON object with one.
fn amount_cents(payload: &[u8]) -> i64 {
    #[derive(serde::Deserialize)]
    struct Amount {
        amount_cents: Option<i64>,
    }
    serde_json::from_slice::<Amount>(payload)
        .ok()
        .and_then(|a| a.amount_cents)
        .unwrap_or(0)
}

impl Transform for TenantTotals {
    fn restore(state: Option<&[u8]>) -> Result<Self, Error> {
        Ok(state
            .map(serde_json::from_slice)
            .transpose()?
            .unwrap_or_default())
    }

    fn process(&mut self, events: &Batch, out: &mut Emitter) -> Result<(), Error> {
        let totals_log = out.output("totals")?;
        let mut payload = String::new();
        for event in events {
            let tenant = event.collective();
            let totals = self.tenants.entry(tenant.as_u128()).or_default();
            totals.kinds[event.kind() as usize] += 1;
            totals.amount_cents += amount_cents(event.payload());
            payload.clear();
            let [created, updated, archived, deleted] = totals.kinds;
            write!(
                payload,
                r#"{{"tenant":"{tenant}","created":{created},"updated":{updated},"archived":{archived},"deleted":{deleted},"amount_cents":{}}}"#,
                totals.amount_cents
            )?;
            out.emit(
                totals_log,
                event.seq(),
                ChangeKind::Updated,
                tenant,
                tenant,
                payload.as_bytes(),
            );
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        // JSON keys are strings: u128 keys are written as decimal ones.
        serde_json::to_vec(self).expect("totals serialize")
    }

    fn finish(&mut self, cursor: u64) -> Result<(), Error> {
        println!(
            "tenant-totals: {} tenants, committed through seq {cursor}",
            self.tenants.len()
        );
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    pulsewatch_guest::run_transform::<TenantTotals>()
}
