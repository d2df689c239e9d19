//! The live line `pulsewatch run` shows on a terminal: each plugin's cursor and lag, so that a
//! long catch-up shows it is moving.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pulsewatch::{Log, PluginSpec, RunOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(200);

/// The line, while it is shown; dropping it clears it.
pub struct Shown {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Shows the line on stderr while `options`' run goes on, if stderr is a terminal.
pub fn show(specs: &[PluginSpec], db: &Path, options: &RunOptions) -> Option<Shown> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let log = Log::open_read_only(db).ok()?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let progress = options.progress.clone();
    let done = Arc::new(AtomicBool::new(false));
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {wide_msg}").ok()?);
    let finished = done.clone();
    let thread = std::thread::spawn(move || {
        while !finished.load(Ordering::Relaxed) {
            let head = log.head().unwrap_or(0);
            let line: Vec<String> = names
                .iter()
                .map(|name| match progress.cursor(name) {
                    Some(cursor) => format!(
                        "{name} {cursor}/{head} (lag {})",
                        head.saturating_sub(cursor)
                    ),
                    None => format!("{name} starting"),
                })
                .collect();
            bar.set_message(line.join(" | "));
            bar.tick();
            std::thread::sleep(EVERY);
        }
        bar.finish_and_clear();
    });
    Some(Shown {
        done,
        thread: Some(thread),
    })
}
