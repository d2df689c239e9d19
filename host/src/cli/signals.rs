//! Signals, as the commands take them. A signal is not a crash: a writer asked to stop (SIGINT,
//! SIGTERM) finishes the transaction it is in, closes the database cleanly and exits at once,
//! with the status a shell expects of a command stopped by that signal (128 + its number). Only
//! SIGKILL or a power loss leaves a file that needs `pulsewatch repair`.
//!
//! The handlers replace whatever the process inherited, an ignored SIGINT included (a shell
//! starts background jobs so), so that a writer started in the background stops when asked.

use anyhow::Context;
use pulsewatch::StopSignal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The stop signals a writer takes.
const STOPS: [i32; 2] = [SIGINT, SIGTERM];

/// A stop signal, once one has come.
#[derive(Debug, Clone, Default)]
pub struct Caught(Arc<AtomicI32>);

impl Caught {
    /// The signal that came, if one did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.0.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

/// The signal's name, as `kill -l` gives it.
pub fn name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| format!("signal {signal}"), |s| s.to_string())
}

/// The exit status of a command stopped by `signal`.
pub fn exit_code(signal: i32) -> ExitCode {
    ExitCode::from(128u8.saturating_add(u8::try_from(signal).unwrap_or(0)))
}

/// From now on SIGINT and SIGTERM are recorded in the returned [`Caught`] (and passed to
/// `then`, on a thread of their own) instead of ending the process: the caller stops when it
/// is safe to.
pub fn catch_stops(mut then: impl FnMut(i32) + Send + 'static) -> anyhow::Result<Caught> {
    let caught = Caught::default();
    let mut signals =
        signal_hook::iterator::Signals::new(STOPS).context("cannot install the signal handlers")?;
    let record = caught.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                // The first one counts; a writer stops at its first chance either way.
                let _ = record
                    .0
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                then(signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(caught)
}

/// First SIGINT or SIGTERM: plugins commit and return within the grace period. Second: they
/// are cancelled at once.
pub fn stop_on_signals(stop: &StopSignal, grace: Duration) -> anyhow::Result<Caught> {
    let stop = stop.clone();
    catch_stops(move |_| {
        if stop.is_stopped() {
            say!("stopping now");
            stop.stop_now();
        } else {
            say!(
                "stopping: plugins have {} to commit and return (Ctrl-C again to stop them now)",
                humantime::format_duration(grace)
            );
            stop.stop();
        }
    })
}

/// SIGHUP asks the run to read its manifest again.
pub fn reload_on_sighup(reload: &pulsewatch::ReloadSignal) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP])
        .context("cannot install the SIGHUP handler")?;
    let reload = reload.clone();
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                reload.request();
            }
        })
        .context("cannot start the SIGHUP thread")?;
    Ok(())
}
