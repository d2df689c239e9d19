//! Nothing a command writes destroys what it did not create: an output that is one of its
//! inputs (the same path, a link to it, another name of the same file) is refused, whatever
//! `--force` says, and the demo removes only what an earlier demo wrote.

use anyhow::{Context, bail};
pub use pulsewatch::supervisor::same_file;
use std::path::{Path, PathBuf};

/// Refuses to write `output` when it is the file `input` (`what` names the input, e.g. "the
/// database it copies"), or something that is not a file (a device such as `/dev/null`, a FIFO,
/// a socket), which replacing would destroy; then makes its directory if needed.
pub fn output_file(output: &Path, input: &Path, what: &str) -> anyhow::Result<()> {
    if same_file(output, input) {
        let also = if output == input {
            String::new()
        } else {
            format!(" ({})", input.display())
        };
        bail!(
            "{} is {what}{also}: writing it would destroy it, --force or not; choose another output path",
            output.display(),
        );
    }
    if let Ok(meta) = std::fs::metadata(output)
        && !meta.is_file()
    {
        bail!(
            "{} is {}, not a file: only a file is replaced, --force or not; choose another output path",
            output.display(),
            if meta.is_dir() {
                "a directory"
            } else {
                "a device, FIFO or socket"
            }
        );
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        directory(parent)?;
    }
    Ok(())
}

/// Makes directory `dir` (and its parents) if it is missing; a file in its place is named.
pub fn directory(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} is a file, not a directory", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))
}

/// The file the demo leaves in its directory, so that a later demo knows what it may remove.
const DEMO_MARK: &str = ".pulsewatch-demo";

/// What a demo writes in its directory, relative to it: all that a later demo removes.
const DEMO_FILES: [&str; 12] = [
    "events.redb",
    "totals.redb",
    "plugins.toml",
    "plugins/kind-counts.wasm",
    "plugins/filter-jsonl.wasm",
    "plugins/tenant-totals.wasm",
    "plugins/webhook.wasm",
    "state/kind-counts",
    "state/filter-jsonl",
    "state/tenant-totals",
    "state/totals-counts",
    "state/webhook",
];

/// The line of the demo's mark that records the head it left its database at.
const HEAD_LINE: &str = "events.redb head ";

/// Records in `dir`'s mark what the demo wrote, with the head it left its database at.
pub fn demo_wrote(dir: &Path, head: u64) -> anyhow::Result<()> {
    let mark = dir.join(DEMO_MARK);
    std::fs::write(
        &mark,
        format!(
            "Written by `pulsewatch demo`, which removes only these when it runs here again, and \
             the database only as it left it:\n{}\n{HEAD_LINE}{head}\n",
            DEMO_FILES.join("\n")
        ),
    )
    .with_context(|| format!("cannot write {}", mark.display()))
}

/// Makes `dir` ready for a demo: created if missing; if it holds files, they must be an earlier
/// demo's (its mark is there), and only what that demo wrote is removed. A directory with files
/// and no mark is refused. Returns the entries of `dir` that are kept because no demo wrote them.
pub fn demo_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    directory(dir)?;
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let mark = dir.join(DEMO_MARK);
    if !entries.is_empty() && !mark.exists() {
        let names: Vec<String> = entries
            .iter()
            .take(3)
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        bail!(
            "{} holds files a demo did not write ({}{}); the demo starts afresh and removes only \
             what a demo wrote, so give it an empty or new --dir",
            dir.display(),
            names.join(", "),
            if entries.len() > names.len() {
                ", ..."
            } else {
                ""
            }
        );
    }
    // The demo writes in directories of its own: through a link it would write (and remove)
    // someone else's files.
    for sub in ["plugins", "state"] {
        let path = dir.join(sub);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
            bail!(
                "{} is not a directory of the demo's own (a link or a file): the demo writes only \
                 in its own directories, so give it an empty or new --dir",
                path.display()
            );
        }
    }
    // Its database, as the demo left it: events someone appended since (the README's live
    // writer, say) are not the demo's to delete.
    let db = dir.join("events.redb");
    if db.exists() {
        let wrote = std::fs::read_to_string(&mark).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(HEAD_LINE)?.parse::<u64>().ok())
        });
        let head = pulsewatch::Log::open_read_only(&db)
            .map_err(anyhow::Error::from)
            .and_then(|log| Ok(log.head()?));
        match (wrote, head) {
            (Some(wrote), Ok(head)) if wrote == head => {}
            (wrote, head) => bail!(
                "{} holds events a demo did not write ({}, the demo left {}): move it away, or \
                 give the demo another --dir",
                db.display(),
                head.map_or_else(|e| super::sentence(&e), |h| format!("its head is {h}")),
                wrote.map_or_else(|| "no record".to_owned(), |w| format!("head {w}"))
            ),
        }
    }
    for file in DEMO_FILES {
        let path = dir.join(file);
        if file.starts_with("state/") && pulsewatch::supervisor::state_in_use(&path) {
            bail!(
                "{} is in use by a run of the demo's plugins: stop that run first",
                path.display()
            );
        }
    }
    for file in DEMO_FILES {
        let path = dir.join(file);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.with_context(|| format!("cannot remove {} (an earlier demo's)", path.display()))?;
    }
    demo_wrote(dir, 0)?;
    let ours = |path: &Path| {
        let name = path.file_name().unwrap_or_default();
        name == DEMO_MARK
            || DEMO_FILES.iter().any(|f| {
                Path::new(f)
                    .components()
                    .next()
                    .is_some_and(|c| c.as_os_str() == name)
            })
    };
    Ok(entries.into_iter().filter(|p| !ours(p)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_the_same_by_any_of_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("events.redb");
        std::fs::write(&file, b"x").unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&file, &hard).unwrap();
        let soft = dir.path().join("soft");
        std::os::unix::fs::symlink(&file, &soft).unwrap();
        let dotted = dir.path().join(".").join("events.redb");
        for name in [&file, &hard, &soft, &dotted] {
            assert!(same_file(name, &file), "{}", name.display());
        }
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        assert!(!same_file(&other, &file));
        assert!(!same_file(&dir.path().join("missing"), &file));
    }

    #[test]
    fn a_demo_removes_only_what_a_demo_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let demo = dir.path().join("demo");
        assert!(demo_dir(&demo).unwrap().is_empty());
        std::fs::create_dir_all(demo.join("state/kind-counts")).unwrap();
        drop(pulsewatch::Log::create(demo.join("events.redb")).unwrap());
        std::fs::create_dir_all(demo.join("state/mine")).unwrap();
        std::fs::write(demo.join("notes.txt"), b"mine").unwrap();
        let kept = demo_dir(&demo).unwrap();
        assert_eq!(kept, [demo.join("notes.txt")]);
        assert!(!demo.join("events.redb").exists() && !demo.join("state/kind-counts").exists());
        assert!(demo.join("state/mine").exists() && demo.join("notes.txt").exists());

        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("events.redb"), b"precious").unwrap();
        let refused = demo_dir(&foreign).unwrap_err().to_string();
        assert!(
            refused.contains("holds files a demo did not write (events.redb)"),
            "{refused}"
        );
        assert_eq!(
            std::fs::read(foreign.join("events.redb")).unwrap(),
            b"precious"
        );
    }
}
