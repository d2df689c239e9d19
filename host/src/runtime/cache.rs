//! A compile cache: components compiled once, kept on disk, loaded without Cranelift.
//!
//! A file is keyed by the component's sha256 and the engine's compatibility hash (wasmtime's
//! version and every compilation setting), so a cache is never used by an engine it does not
//! fit. Loading a compiled file runs its machine code: that is only sound for files this host
//! wrote. So the cache directory is created private (mode 0700) under the state root, in
//! `.pulsewatch/`, which no plugin is ever granted (plugins see only their own state directory,
//! and plugin names cannot start with a dot); and every file has an HMAC-SHA256, under a key kept
//! in the same private directory, checked before the file is deserialized. A file that
//! fails the check (damaged, truncated, written by anyone else) is not loaded: the component is
//! compiled again and the file replaced. The MAC is kept beside the file, so that the file
//! itself is exactly what wasmtime maps and runs.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of a MAC file (files of the first format, the MAC before the component in
/// one file, have none beside them: they are compiled again and replaced).
const MAGIC: &[u8; 8] = b"PWCACHE2";
const MAC_LEN: usize = 32;
/// The HMAC key's file in the cache directory.
const KEY_FILE: &str = "key";

/// Compiled components kept in a directory.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Writes `bytes` to `path` whole or not at all (a temporary file beside it, then a rename),
/// readable by the owner only.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&partial)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

impl CompileCache {
    /// The cache in `dir`, created private if missing, with its key (made on first use).
    pub fn open(dir: &Path) -> std::io::Result<CompileCache> {
        private_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => bytes.try_into().expect("32 bytes"),
            _ => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(std::io::Error::other)?;
                write_atomically(&key_path, &key)?;
                // Another process may have won the race: use whatever key is there now.
                let bytes = std::fs::read(&key_path)?;
                bytes
                    .try_into()
                    .map_err(|_| std::io::Error::other("the cache key is not 32 bytes"))?
            }
        };
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    fn path(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload);
        mac
    }

    /// The component with `sha256`, compiled for `engine`, if this cache holds it and the file
    /// is one this host wrote.
    ///
    /// The file is mapped, not read: its MAC is computed over the mapping, and wasmtime maps it
    /// again to run it, so its code and its memories' initial images come from the page cache,
    /// shared by every process that loads it, without a copy (`cargo bench --bench languages`:
    /// a Python plugin's cached start went from 100 to 42 ms, a JavaScript one's from 102 to
    /// 36 ms).
    pub(crate) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(engine, sha256);
        let tag = std::fs::read(mac_path(&path)).ok()?;
        let tag = tag.strip_prefix(MAGIC)?;
        let file = std::fs::File::open(&path).ok()?;
        // SAFETY: the mapping is read-only and only read while it lives, here; the file is in
        // this host's private directory, replaced by renames, never written in place.
        #[allow(unsafe_code)]
        let mapped = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        self.mac(&mapped).verify_slice(tag).ok()?;
        drop(mapped);
        // SAFETY: the file was serialized by `Component::serialize` in `store` below: it
        // carries this cache's MAC, under a key only this host's private directory holds, and
        // is named for the engine it fits (wasmtime checks that again).
        // The file checked, not whatever the path names now: on Linux, through its descriptor.
        #[cfg(target_os = "linux")]
        let path = {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        };
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(engine, &path) };
        component.ok()
    }

    /// Keeps `component` (compiled from the bytes with `sha256`) for next time: the serialized
    /// component in one file, its MAC in another beside it, written after it. A failure only
    /// costs a compilation next time.
    pub(crate) fn store(&self, engine: &Engine, sha256: &str, component: &Component) {
        let Ok(payload) = component.serialize() else {
            return;
        };
        let tag = self.mac(&payload).finalize().into_bytes();
        let path = self.path(engine, sha256);
        let mut mac = Vec::with_capacity(MAGIC.len() + MAC_LEN);
        mac.extend_from_slice(MAGIC);
        mac.extend_from_slice(&tag);
        if write_atomically(&path, &payload).is_ok() {
            let _ = write_atomically(&mac_path(&path), &mac);
        }
    }
}

/// The file that holds the MAC of the compiled component in `path`.
fn mac_path(path: &Path) -> PathBuf {
    let mut mac = path.as_os_str().to_owned();
    mac.push(".mac");
    PathBuf::from(mac)
}
