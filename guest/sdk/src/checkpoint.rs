//! Crash-safe persistence of the cursor and the plugin's state.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use pulsewatch_log::STATE_DIR;

const FILE: &str = "checkpoint";
const TEMP: &str = "checkpoint.tmp";
/// First line of the file; the version lets a later SDK change the layout.
const MAGIC: &str = "pulsewatch-checkpoint v1";

/// What a [`Checkpoint`] holds: the cursor and the plugin's state as of that cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Saved {
    /// The seq of the last event whose effects `state` includes.
    pub seq: u64,
    /// The plugin's own bytes.
    pub state: Vec<u8>,
}

/// A cursor and state committed atomically to a file: written to a temporary file, synced, then
/// renamed over the previous one, so that a crash leaves either the old or the new checkpoint,
/// never a torn one.
///
/// Layout: a line `pulsewatch-checkpoint v1`, a line with the seq in decimal, then the state.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint in the plugin's state directory, `/state`.
    pub fn in_state_dir() -> Self {
        Self::in_dir(STATE_DIR)
    }

    /// A checkpoint in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Checkpoint { dir: dir.into() }
    }

    /// The directory the checkpoint lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last committed checkpoint, or `None` if nothing was ever committed. An error names
    /// the file.
    pub fn load(&self) -> io::Result<Option<Saved>> {
        let path = self.dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(said(e, format!("cannot read {}", path.display()))),
        };
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a pulsewatch checkpoint: {what}", path.display()),
            )
        };
        let mut parts = bytes.splitn(3, |&b| b == b'\n');
        if parts.next() != Some(MAGIC.as_bytes()) {
            return Err(invalid(&format!("its first line is not {MAGIC:?}")));
        }
        let seq = parts
            .next()
            .and_then(|line| std::str::from_utf8(line).ok())
            .and_then(|line| line.parse().ok())
            .ok_or_else(|| invalid("its second line is not a seq"))?;
        let state = parts
            .next()
            .ok_or_else(|| invalid("it ends before the plugin's state"))?
            .to_vec();
        Ok(Some(Saved { seq, state }))
    }

    /// Commits `seq` and `state` atomically and durably. An error names the file and what
    /// failed (a full disk quota, say); the previous checkpoint is then still whole.
    pub fn commit(&self, seq: u64, state: &[u8]) -> io::Result<()> {
        let temp = self.dir.join(TEMP);
        let write = || -> io::Result<()> {
            let mut file = File::create(&temp)?;
            write!(file, "{MAGIC}\n{seq}\n")?;
            file.write_all(state)?;
            file.sync_all()
        };
        write().map_err(|e| {
            said(
                e,
                format!(
                    "cannot commit the checkpoint at seq {seq} to {}",
                    temp.display()
                ),
            )
        })?;
        let path = self.dir.join(FILE);
        fs::rename(&temp, &path).map_err(|e| {
            said(
                e,
                format!(
                    "cannot commit the checkpoint at seq {seq} to {}",
                    path.display()
                ),
            )
        })?;
        // Make the rename itself durable. Not every filesystem lets a directory be synced.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// `error`, of the same kind, after `what` was being done.
fn said(error: io::Error, what: String) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
