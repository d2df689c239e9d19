//! `pulsewatch snapshot` and `pulsewatch bundle`: what a plugin needs to run where pulsewatch
//! is not installed, under the stock `wasmtime run`.

use super::{safety, signals};
use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::{Log, STATE_DIR};
use pulsewatch_log::provider::DEFAULT_DB_PATH;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `pulsewatch snapshot`.
#[derive(ClapArgs)]
pub struct SnapshotArgs {
    /// The live database, opened read-only (a writer may go on appending).
    #[arg(long)]
    db: PathBuf,
    /// The snapshot file to write.
    #[arg(long, short)]
    output: PathBuf,
    /// Copy only the events after this seq.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    since: u64,
    /// Copy only the events up to this seq [default: the head].
    #[arg(long, allow_negative_numbers = true)]
    until: Option<u64>,
    /// Replace the output file if it exists (never the database itself).
    #[arg(long)]
    force: bool,
    /// Salvage a damaged log: copy every intact batch, leave out the damaged ones and record
    /// them in the copy as lost, so that its readers are told (see `pulsewatch repair`).
    #[arg(long)]
    skip_damaged: bool,
}

/// Arguments of `pulsewatch bundle`.
#[derive(ClapArgs)]
pub struct BundleArgs {
    /// The plugin component.
    plugin: PathBuf,
    /// The standalone component to write.
    #[arg(long, short)]
    output: PathBuf,
    /// Where the bundled provider finds the snapshot, as the plugin's WASI host preopens it.
    #[arg(long, default_value = DEFAULT_DB_PATH)]
    db_path: String,
    /// Replace the output file if it exists (never the plugin itself).
    #[arg(long)]
    force: bool,
}

pub fn snapshot(args: &SnapshotArgs) -> anyhow::Result<ExitCode> {
    // A stop signal waits for the copy (a second or so for a million events): a copy cut short
    // would leave its partial file behind.
    let caught = signals::catch_stops(|_| {})?;
    let log = Log::open_read_only(&args.db)?;
    let until = args.until.unwrap_or(u64::MAX);
    if args.since >= until {
        bail!(
            "--since {} is not below --until {until}: there is nothing to copy",
            args.since
        );
    }
    // A copy with no events would not know where the log stood: its readers could not tell
    // that events before it exist.
    // (A damaged last batch hides the head: that is for --skip-damaged to meet.)
    let head = log.head().ok();
    if let Some(head) = head.filter(|&head| args.since > 0 && args.since >= head) {
        bail!(
            "--since {} is at or beyond the head, {head}: there is nothing to copy; give a seq \
             below the head",
            args.since
        );
    }
    safety::output_file(&args.output, &args.db, "the database it copies")?;
    let started = Instant::now();
    let seqs = args.since + 1..=until;
    let written = if args.skip_damaged {
        log.snapshot_skipping_damaged(&args.output, seqs, args.force)
    } else {
        log.snapshot(&args.output, seqs, args.force)
    };
    let info = written.map_err(|e| match e {
        pulsewatch::SnapshotError::Exists { .. } => {
            anyhow::anyhow!("{e} (pass --force to replace it)")
        }
        other => other.into(),
    })?;
    let held = match (info.first, info.last) {
        (Some(first), Some(last)) => {
            format!("seq {first} to {last}, {}", super::events(info.events))
        }
        _ => "no events".into(),
    };
    say!(
        "{}: {held} ({} ms)",
        args.output.display(),
        started.elapsed().as_millis()
    );
    for damage in &info.lost {
        say!("pulsewatch: left out, damaged: {damage}; the copy records them as lost");
    }
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}

pub fn bundle(args: &BundleArgs) -> anyhow::Result<ExitCode> {
    // The provider opens the snapshot at this path, in a directory the host preopens.
    let in_a_directory = std::path::Path::new(&args.db_path)
        .parent()
        .is_some_and(|dir| dir.is_absolute());
    if !in_a_directory || args.db_path.ends_with('/') {
        bail!(
            "--db-path {:?} is not an absolute path to a file, such as {DEFAULT_DB_PATH}: the \
             bundle opens the snapshot there, in a directory `wasmtime run --dir` preopens",
            args.db_path
        );
    }
    safety::output_file(&args.output, &args.plugin, "the plugin it bundles")?;
    if !args.force && args.output.exists() {
        bail!(
            "{}: already exists (pass --force to replace it)",
            args.output.display()
        );
    }
    let bytes = std::fs::read(&args.plugin)
        .with_context(|| format!("{}: cannot read", args.plugin.display()))?;
    let name = args.plugin.file_stem().map_or_else(
        || args.plugin.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let bundled = pulsewatch::bundle(&name, &bytes, &args.db_path)?;
    // Written beside the output and moved into place: a stop or a failure midway leaves the
    // file it replaces whole.
    let cannot = || format!("{}: cannot write", args.output.display());
    let dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).with_context(cannot)?;
    // A temporary file is private (0600); a bundle is for others to run.
    file.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(cannot)?;
    std::io::Write::write_all(&mut file, &bundled).with_context(cannot)?;
    file.persist(&args.output)
        .map_err(|e| e.error)
        .with_context(cannot)?;
    // A plugin that emits writes its outputs beside the snapshot, named in an environment
    // variable the provider reads.
    let outputs = if pulsewatch::bundle::emits(&bytes) {
        " --env PULSEWATCH_OUTPUTS=NAME[,NAME...]"
    } else {
        ""
    };
    say!(
        "{}: {name} with the feed provider ({} bytes); run it with\n   wasmtime run --dir SNAPSHOT_DIR::{} --dir STATE_DIR::{STATE_DIR}{outputs} {}",
        args.output.display(),
        bundled.len(),
        std::path::Path::new(&args.db_path)
            .parent()
            .map_or_else(|| "/".into(), |p| p.display().to_string()),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
