//! Restarts: a following plugin that fails is started again from its committed cursor, after
//! a pause that doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], and quarantined once it keeps
//! failing at the same place. A plugin that could not start because another run holds its state
//! did nothing wrong: it waits its turn and is never quarantined for it.

use super::Supervisor;
use super::entry::Entry;
use super::launch::RunContext;
use super::status::{PluginState, Quarantine, fingerprint};
use super::worker::Worker;
use crate::runtime::{Failure, Outcome};
use crate::spec::RestartPolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The pause before the first restart of a failed plugin; it doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A run this long counts as healthy: the next failure starts the pauses over.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Failures in a row without the cursor moving after which a plugin is quarantined.
pub const QUARANTINE_AFTER: u32 = 5;

impl Supervisor {
    /// A plugin's quarantine, if it still holds: its record is for this very spec. A record for
    /// another spec (the manifest changed) is released.
    pub(super) fn held_in_quarantine(&self, entry: &Entry) -> Option<Outcome> {
        let home = self.home.as_ref()?;
        let record = home.quarantine(&entry.spec.name)?;
        if record.fingerprint != fingerprint(&entry.spec) {
            let _ = home.release(&entry.spec.name);
            return None;
        }
        let mut status = entry.status();
        status.state = PluginState::Quarantined;
        status.last_error = Some(record.error.clone());
        status.quarantine = Some(record.clone());
        Some(entry.failed(Failure::Quarantined {
            seq: record.seq,
            failures: QUARANTINE_AFTER,
            last: record.error,
        }))
    }

    /// Runs one plugin to its end and records how it ended on its entry.
    pub(super) async fn lifecycle(
        &self,
        entry: Arc<Entry>,
        first: Option<(Worker, bool)>,
        run: &RunContext<'_>,
    ) -> Arc<Entry> {
        let outcome = self.supervised(&entry, first, run).await;
        entry.set_outcome(outcome);
        entry
    }

    /// Runs one plugin through its failures: restarts with growing pauses, and quarantine once
    /// it keeps failing where it stands.
    async fn supervised(
        &self,
        entry: &Entry,
        first: Option<(Worker, bool)>,
        run: &RunContext<'_>,
    ) -> Outcome {
        let options = run.options;
        let mut next = first;
        let mut restarts = 0;
        let mut compiled = false;
        let mut backoff = FIRST_BACKOFF;
        let mut failed_at: Option<Option<u64>> = None;
        let mut in_a_row = 0;
        // How its last run ended, while it is started again.
        let mut last: Option<Outcome> = None;
        loop {
            let ready = match next.take() {
                Some(ready) => Ok(ready),
                None => tokio::select! {
                    ready = self.start(entry, run, restarts == 0) => ready,
                    // Stopped while compiling or starting: its workers are killed as they drop.
                    // Stopped on its way back from a failure, that failure is how it ended.
                    () = entry.stop.stopped() => {
                        entry.set_state(PluginState::Stopped);
                        return last.unwrap_or_else(|| entry.failed(Failure::NotStarted));
                    }
                },
            };
            let mut outcome = match ready {
                Ok((worker, was_compiled)) => {
                    compiled |= was_compiled;
                    entry.set_state(PluginState::Running);
                    let started = Instant::now();
                    let outcome = worker
                        .run(
                            &entry.stop,
                            options.grace,
                            run.sink,
                            entry,
                            run.input(&entry.spec).1,
                        )
                        .await;
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = FIRST_BACKOFF;
                    }
                    outcome
                }
                Err(outcome) => *outcome,
            };
            outcome.restarts = restarts;
            outcome.compiled = compiled;
            let Err(failure) = &outcome.result else {
                // Ended cleanly: on its own, or because it was asked to.
                entry.set_state(if entry.stop.is_stopped() {
                    PluginState::Stopped
                } else {
                    PluginState::Finished
                });
                return outcome;
            };
            entry.status().last_error = Some(failure.to_string());
            if entry.stop.is_stopped() {
                entry.set_state(PluginState::Stopped);
                return outcome;
            }
            if !options.follow || entry.spec.restart == RestartPolicy::Never {
                entry.set_state(PluginState::Failed);
                return outcome;
            }
            // Its position: where it last read in this run, or else where it stood when it last
            // left a run under this home.
            let at = entry.tracker.cursor().or_else(|| {
                let home = self.home.as_ref()?;
                home.slots().ok()?.get(&entry.spec.name).copied()
            });
            // Another run holding its state is no failure of the plugin's.
            let its_own = !matches!(failure, Failure::InUse { .. });
            in_a_row = match (its_own, failed_at == Some(at)) {
                (false, _) => in_a_row,
                (true, true) => in_a_row + 1,
                (true, false) => 1,
            };
            failed_at = Some(at);
            if in_a_row >= QUARANTINE_AFTER {
                // The event after its position: the one it keeps failing on.
                let seq = at.map(|cursor| cursor.saturating_add(1));
                let record = Quarantine {
                    seq,
                    error: failure.to_string(),
                    at_ms: pulsewatch_log::now_ms(),
                    fingerprint: fingerprint(&entry.spec),
                };
                if let Some(home) = &self.home {
                    let _ = home.set_quarantine(&entry.spec.name, &record);
                }
                let mut status = entry.status();
                status.state = PluginState::Quarantined;
                status.quarantine = Some(record);
                drop(status);
                outcome.result = Err(Failure::Quarantined {
                    seq,
                    failures: in_a_row,
                    last: failure.to_string(),
                });
                return outcome;
            }
            entry.set_state(PluginState::BackingOff);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = entry.stop.stopped() => {
                    entry.set_state(PluginState::Stopped);
                    return outcome;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            restarts += 1;
            entry.status().restarts = restarts;
            last = Some(outcome);
        }
    }
}
