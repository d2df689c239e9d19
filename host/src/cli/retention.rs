//! `pulsewatch compact`: deletes old events, never ones a plugin under the state root has yet to
//! read unless forced, the way replication slots hold back a database's WAL.

use super::operate::RootArgs;
use super::signals;
use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use pulsewatch::{Log, now_ms};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `pulsewatch compact`.
#[derive(ClapArgs)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct CompactArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Keep the newest N events.
    #[arg(long, value_name = "N", group = "what", allow_negative_numbers = true)]
    keep_last: Option<u64>,
    /// Delete the events before this seq.
    #[arg(
        long,
        value_name = "SEQ",
        group = "what",
        allow_negative_numbers = true
    )]
    before: Option<u64>,
    /// Delete the events stamped longer ago than this (e.g. 7d, 12h, 30min).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, group = "what", allow_hyphen_values = true)]
    older_than: Option<Duration>,
    /// Delete even events that plugins have not read yet; they get `truncated` on their next
    /// poll.
    #[arg(long)]
    force: bool,
    /// A plugin more than N events behind the head no longer holds events back (an abandoned
    /// plugin must not fill the disk); it gets `truncated` if its events are deleted.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_keep: Option<u64>,
}

pub fn compact(args: &CompactArgs) -> anyhow::Result<ExitCode> {
    let db = args.root.db();
    // A stop signal waits for the compaction's transaction: the file is never left unclean.
    let caught = signals::catch_stops(|_| {})?;
    // Writers take turns: this works while the application's writer and readers run.
    let log = Log::open(db)?;
    let head = log.head()?;
    let asked = match (args.keep_last, args.before, args.older_than) {
        (Some(n), _, _) => head.saturating_sub(n) + 1,
        (_, Some(seq), _) => seq,
        (_, _, Some(age)) => {
            let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
            log.seq_at(cutoff)? + 1
        }
        _ => bail!("one of --keep-last, --before or --older-than is needed"),
    };
    // Whole batches go, never the newest: what is really deleted is what the plugins are
    // checked against, and all that is deleted.
    let before = log.oldest_after_compacting(asked)?;
    let home = args.root.home()?;
    let slots = home.slots().with_context(|| {
        format!(
            "cannot read the plugins' positions under {}",
            home.dir().display()
        )
    })?;
    // A plugin at `seq` has read through it. What it loses now are the events from the one
    // after it (or the oldest still stored, if earlier ones are already gone) to `before`.
    let oldest = log.oldest()?;
    let mut holding = Vec::new();
    for (plugin, &seq) in &slots {
        let from = seq.saturating_add(1).max(oldest);
        if from >= before {
            continue;
        }
        let lost = format!("events {from}..{}", before - 1);
        let lag = head.saturating_sub(seq);
        if args.max_keep.is_some_and(|max| lag > max) {
            say!(
                "pulsewatch: {plugin} is {lag} events behind (at seq {seq}), more than --max-keep: \
                 {lost} it has not read are deleted, and it gets `truncated`"
            );
        } else if args.force {
            say!(
                "pulsewatch: {plugin} has read only to seq {seq}: {lost} it has not read are \
                 deleted (--force), and it gets `truncated`"
            );
        } else {
            holding.push(format!("{plugin} (at seq {seq})"));
        }
    }
    if !holding.is_empty() {
        bail!(
            "refused: compacting before seq {before} would delete events these plugins have not \
             read: {}; let them catch up, or pass --force (or --max-keep N)",
            holding.join(", ")
        );
    }
    let compacted = log.compact_before(before)?;
    drop(log);
    say!(
        "{}: deleted {}; the oldest kept is seq {}, the head {head}{}",
        db.display(),
        super::events(compacted.deleted),
        compacted.oldest,
        if compacted.oldest < asked {
            " (compaction deletes whole stored batches, and never the newest)"
        } else {
            ""
        }
    );
    Ok(caught
        .signal()
        .map_or(ExitCode::SUCCESS, signals::exit_code))
}

/// Arguments of `pulsewatch forget`.
#[derive(ClapArgs)]
pub struct ForgetArgs {
    /// The plugin that no longer runs under this state root.
    name: String,
    #[command(flatten)]
    root: RootArgs,
}

/// Drops a plugin's slot, so that it holds back no compaction.
pub fn forget(args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let home = args.root.home()?;
    let root = args.root.state_root();
    pulsewatch::PluginSpec::named(&args.name, "", &root)?;
    if pulsewatch::supervisor::state_in_use(&root.join(&args.name)) {
        bail!(
            "{} is running (a run holds its state): its position would be recorded again at \
             once; stop it, or remove it from the manifest, first",
            args.name
        );
    }
    let dropped = home
        .drop_slot(&args.name)
        .with_context(|| format!("cannot forget {} under {}", args.name, home.dir().display()))?;
    if !dropped {
        let slots = home.slots().unwrap_or_default();
        bail!(
            "{} has no recorded position under {} (recorded there: {})",
            args.name,
            home.dir().display(),
            if slots.is_empty() {
                "none".to_owned()
            } else {
                slots.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    }
    say!(
        "{}: forgotten; compaction no longer waits for it",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}
