//! What a plugin is granted for a run, all in one place: its arguments, the environment
//! variables its spec gives (and its start position), its output streams and its state
//! directory, locked for the run and measured for its quota. Everything else is denied: no
//! inherited environment, stdin closed, no network, no other file.

use super::Failure;
use super::output::Capture;
use super::quota::DiskUsage;
use crate::spec::{PluginSpec, START_VARIABLE, StartPosition};
use std::fs::File;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

pub use pulsewatch_log::STATE_DIR;

/// The largest `get-random-bytes` a plugin may ask for at once: the host allocates it. A plugin
/// wanting more asks again.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// How many more times a state directory found locked is tried, 10 ms apart.
const LOCK_TRIES: u32 = 5;

/// A plugin's grants for one run.
pub(crate) struct Grants {
    pub(crate) wasi: WasiCtx,
    pub(crate) disk: DiskUsage,
    /// The state directory, locked: the same plugin cannot run twice at once on the same state,
    /// in this process or another.
    pub(crate) state_lock: File,
}

/// Creates and locks the plugin's state directory and builds its WASI context, its file I/O
/// done on the thread that runs it if `inline`, else on the executor's blocking pool.
pub(crate) fn grant(
    spec: &PluginSpec,
    stdout: &Capture,
    stderr: &Capture,
    inline: bool,
) -> Result<Grants, Failure> {
    let dir = &spec.state_dir;
    let failed = |e: std::io::Error| Failure::StateDir {
        path: dir.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    // The directory itself is locked, through a descriptor the plugin never sees: nothing the
    // plugin does in it can release the lock.
    let state_lock = File::open(dir).map_err(failed)?;
    // A look at whether a run holds it (`pulsewatch forget`, the demo) holds it for an instant:
    // that is tried past, another run is not.
    let mut tries = 0;
    loop {
        match state_lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < LOCK_TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Failure::InUse { path: dir.clone() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
    }
    let disk = DiskUsage::measure(dir, spec.limits.disk).map_err(failed)?;

    let args = std::iter::once(spec.name.as_str()).chain(spec.args.iter().map(String::as_str));
    let mut builder = WasiCtxBuilder::new();
    builder.args(&args.collect::<Vec<_>>()).envs(&spec.env);
    // Only when there is something to say: by default a plugin sees no environment at all.
    if spec.start != StartPosition::Beginning {
        builder.env(START_VARIABLE, spec.start.to_string());
    }
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES)
        // Inline, a file operation costs no hand-over to a pool thread, and a blocked operation
        // on a regular file is short: right for a plugin with a thread of its own.
        .allow_blocking_current_thread(inline)
        .preopened_dir(dir, STATE_DIR, FsPerms::ReadWrite)
        .map_err(|e| Failure::Sandbox(format!("{}: cannot grant: {e}", dir.display())))?;
    Ok(Grants {
        wasi: builder.build(),
        disk,
        state_lock,
    })
}
