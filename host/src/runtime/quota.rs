//! The disk quota on a plugin's `/state`: a write, a file or a directory that would take it past
//! its bytes or entries fails inside the plugin with WASI's `quota` error (`EDQUOT`), before
//! anything is written.
//!
//! wasmtime-wasi has no hook for this, so the filesystem functions that add bytes or entries are
//! shadowed in the linker by versions that charge the quota and then call wasmtime-wasi's own
//! implementation; the ones that free space only mark the count as stale. Charging is
//! conservative (a write counts all its bytes, even over existing ones; an open with `create`
//! counts an entry, even for a file that exists), and before refusing, the directory is measured
//! afresh: a plugin is refused only when it really is at its quota, and a plugin that rewrites
//! the same file pays one measurement per quota's worth of writes.

use super::QuotaBreach;
use super::store::Sandbox;
use crate::limits::DiskQuota;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

/// The interface whose functions are shadowed: wasmtime-wasi's own version of it, under which
/// it links every `wasi:filesystem/types@0.2.x` import.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// How much of its quota a plugin's `/state` uses, shared by the plugin's store and the file
/// streams it opens.
#[derive(Clone)]
pub(crate) struct DiskUsage(Arc<Mutex<Usage>>);

struct Usage {
    root: PathBuf,
    quota: DiskQuota,
    bytes: u64,
    entries: u64,
    /// Whether `bytes` and `entries` are a measurement, not an estimate.
    measured: bool,
    /// The first refusal, for the failure report.
    breach: Option<QuotaBreach>,
}

/// The sum of file lengths and the number of entries under `root`, not following links. An
/// explicit stack, not recursion: a plugin may nest directories deeply.
fn measure(root: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            entries += 1;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    Ok((bytes, entries))
}

impl DiskUsage {
    /// Measures `root` against `quota`.
    pub(crate) fn measure(root: &Path, quota: DiskQuota) -> std::io::Result<DiskUsage> {
        let (bytes, entries) = measure(root)?;
        Ok(DiskUsage(Arc::new(Mutex::new(Usage {
            root: root.to_path_buf(),
            quota,
            bytes,
            entries,
            measured: true,
            breach: None,
        }))))
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes and entries counted (an estimate that errs high between measurements).
    pub(crate) fn counts(&self) -> (u64, u64) {
        let usage = self.lock();
        (usage.bytes, usage.entries)
    }

    /// The first refusal, if any.
    pub(crate) fn breach(&self) -> Option<QuotaBreach> {
        self.lock().breach
    }

    /// Charges `bytes` and `entries` about to be added, or refuses them.
    fn charge(&self, bytes: u64, entries: u64) -> Result<(), ErrorCode> {
        let mut usage = self.lock();
        let over = |u: &Usage| {
            if u.bytes.saturating_add(bytes) > u.quota.bytes {
                Some(QuotaBreach::Bytes(u.quota.bytes))
            } else if u.entries.saturating_add(entries) > u.quota.entries {
                Some(QuotaBreach::Entries(u.quota.entries))
            } else {
                None
            }
        };
        if over(&usage).is_some() && !usage.measured {
            // An estimate says no: ask the directory. A directory that cannot be measured keeps
            // the estimate, which only ever errs high.
            if let Ok((bytes, entries)) = measure(&usage.root) {
                usage.bytes = bytes;
                usage.entries = entries;
            }
            usage.measured = true;
        }
        if let Some(breach) = over(&usage) {
            usage.breach.get_or_insert(breach);
            return Err(ErrorCode::Quota);
        }
        usage.bytes += bytes;
        usage.entries += entries;
        usage.measured = false;
        Ok(())
    }

    /// Something may have been freed: the count is now an estimate that errs high.
    fn released(&self) {
        self.lock().measured = false;
    }
}

/// A file's output stream whose writes are charged to the quota first.
struct Charged {
    inner: DynOutputStream,
    usage: DiskUsage,
}

/// A stream write the quota refused, for `filesystem-error-code` to name as `quota`
/// (wasmtime-wasi would make an OS error `EDQUOT` a plain `io`). wasi-libc does not ask, and
/// reports any failed stream write as `EIO`; `descriptor.write` reports `quota` itself.
#[derive(Debug, thiserror::Error)]
#[error("disk quota exceeded")]
struct QuotaExceeded;

fn quota_exceeded() -> StreamError {
    StreamError::LastOperationFailed(QuotaExceeded.into())
}

#[wasmtime_wasi::async_trait]
impl Pollable for Charged {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Charged {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.usage
            .charge(bytes.len() as u64, 0)
            .map_err(|_| quota_exceeded())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.usage
            .charge(nelem as u64, 0)
            .map_err(|_| quota_exceeded())?;
        self.inner.write_zeroes(nelem)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

/// wasmtime-wasi's filesystem functions, as the shadowing functions call them.
fn fs(sandbox: &mut Sandbox) -> WasiFilesystemCtxView<'_> {
    let view = sandbox.ctx();
    WasiFilesystemCtxView {
        ctx: view.ctx.filesystem(),
        table: view.table,
    }
}

/// A `result<T, error-code>` for the guest: filesystem errors are its to handle, anything else
/// (a bad handle, a full table) traps.
fn lower<T>(result: FsResult<T>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(error.downcast()?),)),
    }
}

/// Replaces a stream just opened on a file by one charged to the quota.
fn charged(
    sandbox: &mut Sandbox,
    stream: FsResult<Resource<DynOutputStream>>,
) -> FsResult<Resource<DynOutputStream>> {
    let stream = stream?;
    let usage = sandbox.disk.clone();
    let inner = sandbox.table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(Charged { inner, usage });
    Ok(sandbox.table.push(wrapped)?)
}

type Fd = Resource<Descriptor>;

/// Shadows the growing and freeing functions of `wasi:filesystem/types` in `linker`, which
/// must already hold wasmtime-wasi's.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut shadowed = linker.instance(FILESYSTEM_TYPES)?;

    shadowed.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buffer, offset): (Fd, Vec<u8>, u64)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                if let Err(code) = sandbox.disk.charge(buffer.len() as u64, 0) {
                    return Ok((Err(code),));
                }
                lower(HostDescriptor::write(&mut fs(sandbox), fd, buffer, offset).await)
            })
        },
    )?;
    shadowed.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Fd, u64)| {
            let sandbox = store.data_mut();
            let stream = HostDescriptor::write_via_stream(&mut fs(sandbox), fd, offset);
            lower(charged(sandbox, stream))
        },
    )?;
    shadowed.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Fd,)| {
            let sandbox = store.data_mut();
            let stream = HostDescriptor::append_via_stream(&mut fs(sandbox), fd);
            lower(charged(sandbox, stream))
        },
    )?;
    shadowed.func_wrap(
        "filesystem-error-code",
        |mut store, (error,): (Resource<wasmtime::Error>,)| {
            let sandbox = store.data_mut();
            let refused = sandbox
                .table
                .get(&error)?
                .downcast_ref::<QuotaExceeded>()
                .is_some();
            if refused {
                return Ok((Some(ErrorCode::Quota),));
            }
            Ok((types::Host::filesystem_error_code(&mut fs(sandbox), error)?,))
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Fd, u64)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                let fd_again = Resource::new_borrow(fd.rep());
                let current = match HostDescriptor::stat(&mut fs(sandbox), fd_again).await {
                    Ok(stat) => stat.size,
                    Err(error) => return lower(Err(error)),
                };
                if size > current {
                    if let Err(code) = sandbox.disk.charge(size - current, 0) {
                        return Ok((Err(code),));
                    }
                } else {
                    sandbox.disk.released();
                }
                lower(HostDescriptor::set_size(&mut fs(sandbox), fd, size).await)
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Fd,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let sandbox = store.data_mut();
                if open_flags.contains(OpenFlags::CREATE)
                    && let Err(code) = sandbox.disk.charge(0, 1)
                {
                    return Ok((Err(code),));
                }
                if open_flags.contains(OpenFlags::TRUNCATE) {
                    sandbox.disk.released();
                }
                lower(
                    HostDescriptor::open_at(
                        &mut fs(sandbox),
                        fd,
                        path_flags,
                        path,
                        open_flags,
                        flags,
                    )
                    .await,
                )
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Fd, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                if let Err(code) = sandbox.disk.charge(0, 1) {
                    return Ok((Err(code),));
                }
                lower(HostDescriptor::create_directory_at(&mut fs(sandbox), fd, path).await)
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, old_path, new_path): (Fd, String, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                if let Err(code) = sandbox.disk.charge(old_path.len() as u64, 1) {
                    return Ok((Err(code),));
                }
                lower(HostDescriptor::symlink_at(&mut fs(sandbox), fd, old_path, new_path).await)
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (fd, old_flags, old_path, new_fd, new_path): (Fd, PathFlags, String, Fd, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                if let Err(code) = sandbox.disk.charge(0, 1) {
                    return Ok((Err(code),));
                }
                lower(
                    HostDescriptor::link_at(
                        &mut fs(sandbox),
                        fd,
                        old_flags,
                        old_path,
                        new_fd,
                        new_path,
                    )
                    .await,
                )
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store, (fd, path): (Fd, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                let result = HostDescriptor::unlink_file_at(&mut fs(sandbox), fd, path).await;
                sandbox.disk.released();
                lower(result)
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store, (fd, path): (Fd, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                let result = HostDescriptor::remove_directory_at(&mut fs(sandbox), fd, path).await;
                sandbox.disk.released();
                lower(result)
            })
        },
    )?;
    shadowed.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store, (fd, old_path, new_fd, new_path): (Fd, String, Fd, String)| {
            Box::new(async move {
                let sandbox = store.data_mut();
                let result =
                    HostDescriptor::rename_at(&mut fs(sandbox), fd, old_path, new_fd, new_path)
                        .await;
                sandbox.disk.released();
                lower(result)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(dir: &Path, bytes: u64, entries: u64) -> DiskUsage {
        DiskUsage::measure(dir, DiskQuota { bytes, entries }).unwrap()
    }

    #[test]
    fn a_measurement_counts_file_lengths_and_entries_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), [0; 100]).unwrap();
        std::fs::write(dir.path().join("g"), [0; 20]).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("a/root")).unwrap();
        let (bytes, entries) = measure(dir.path()).unwrap();
        assert_eq!(entries, 5, "a, a/b, a/b/f, a/root, g");
        assert_eq!(
            bytes, 121,
            "the link counts its own length (1), not what it points to"
        );
    }

    #[test]
    fn charges_past_the_quota_are_refused_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0; 600]).unwrap();
        let usage = usage(dir.path(), 1000, 3);
        assert_eq!(usage.charge(400, 1), Ok(()), "exactly at the quota");
        std::fs::write(dir.path().join("g"), [0; 400]).unwrap();
        assert_eq!(usage.charge(1, 0), Err(ErrorCode::Quota));
        assert_eq!(usage.breach(), Some(QuotaBreach::Bytes(1000)));
        assert_eq!(
            usage.charge(0, 2),
            Err(ErrorCode::Quota),
            "2 + 2 > 3 entries"
        );
        assert_eq!(
            usage.breach(),
            Some(QuotaBreach::Bytes(1000)),
            "the first refusal is kept"
        );
        assert_eq!(usage.charge(0, 1), Ok(()));
    }

    #[test]
    fn an_estimate_that_says_no_is_checked_against_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0; 600]).unwrap();
        let usage = usage(dir.path(), 1000, 10);
        // Rewriting 300 bytes of the file, ten times over: charged 3000 in all, but the
        // directory never holds more than its 600.
        for _ in 0..10 {
            assert_eq!(usage.charge(300, 0), Ok(()));
        }
        assert_eq!(
            usage.charge(500, 0),
            Err(ErrorCode::Quota),
            "600 + 500 > 1000"
        );
    }

    #[test]
    fn freed_space_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0; 900]).unwrap();
        let usage = usage(dir.path(), 1000, 10);
        assert_eq!(usage.charge(200, 0), Err(ErrorCode::Quota));
        std::fs::remove_file(dir.path().join("f")).unwrap();
        usage.released();
        assert_eq!(usage.charge(200, 1), Ok(()));
    }
}
