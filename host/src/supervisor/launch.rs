//! Starting workers: each distinct component compiled once, into the run's compile cache, by a
//! worker that only compiles (under the compile budget); then each plugin's worker, which loads
//! it from there, started and admitted.

use super::entry::Entry;
use super::status::PluginState;
use super::worker::{Admission, Worker};
use super::{SuperviseError, Supervisor};
use crate::runtime::{CompileCache, Failure, Outcome, OutputSink, RunOptions};
use crate::spec::{PluginSpec, sha256_hex};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What every worker of one run shares.
pub(crate) struct RunContext<'a> {
    pub(crate) db: &'a Path,
    pub(crate) options: &'a RunOptions,
    pub(crate) sink: &'a Arc<dyn OutputSink>,
    /// The compile cache workers load from; `None` when none could be made.
    pub(crate) cache: Option<&'a Path>,
    /// For each component digest, whether this run has had it compiled into the cache (or
    /// found it there), set once by whichever start did it.
    pub(crate) compiled: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>,
    /// For each log the supervisor watches, a count of its changes.
    pub(crate) appended: HashMap<PathBuf, tokio::sync::watch::Receiver<u64>>,
    /// The worker of the plugins whose isolation is shared, once one has started.
    pub(crate) shared: super::shared::SharedSlot,
}

impl RunContext<'_> {
    /// The log `spec` reads, and the changes to it the supervisor watches, if it does.
    pub(crate) fn input(
        &self,
        spec: &PluginSpec,
    ) -> (PathBuf, Option<tokio::sync::watch::Receiver<u64>>) {
        let path = spec.input.clone().unwrap_or_else(|| self.db.to_path_buf());
        let appended = self.appended.get(&path).cloned();
        (path, appended)
    }

    pub(super) fn compiled(&self, digest: &str) -> Arc<tokio::sync::OnceCell<()>> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(compiled.entry(digest.to_owned()).or_default())
    }
}

/// The sha256 of a spec's component, as pinned or as read.
fn digest(spec: &PluginSpec) -> Option<String> {
    spec.sha256
        .clone()
        .or_else(|| std::fs::read(&spec.component).ok().map(|b| sha256_hex(&b)))
}

impl Supervisor {
    /// The compile cache: the home's, or one for this run only (removed when the returned
    /// guard drops). Without one (it cannot be made), each worker compiles its component
    /// itself, under its run limits.
    pub(super) fn cache(&self) -> (Option<tempfile::TempDir>, Option<PathBuf>) {
        let scratch = self
            .home
            .is_none()
            .then(tempfile::tempdir)
            .and_then(Result::ok);
        let dir = match (&self.home, &scratch) {
            (Some(home), _) => home.cache_dir(),
            (None, Some(scratch)) => scratch.path().to_path_buf(),
            (None, None) => return (None, None),
        };
        let usable = CompileCache::open(&dir).is_ok();
        (scratch, usable.then_some(dir))
    }

    /// Starts and admits a worker for each spec. First each distinct component is compiled into
    /// the cache, once, by a worker that only compiles (under the compile budget); then every
    /// plugin's worker loads it from there. Returns, for each spec, its ready worker and whether
    /// its component was compiled for it (`None`: it ended before it was ready, and its
    /// lifecycle reports how from a fresh start).
    pub(super) async fn admit_all(
        &self,
        specs: &[&PluginSpec],
        run: &RunContext<'_>,
    ) -> Result<Vec<Option<(Worker, bool)>>, SuperviseError> {
        let compiled_for = if run.cache.is_some() {
            self.compile_all(specs, run).await?
        } else {
            BTreeSet::new()
        };
        let launched =
            futures::future::join_all(specs.iter().map(|spec| self.launch(spec, run, false))).await;
        let mut ready = Vec::with_capacity(specs.len());
        for (i, launched) in launched.into_iter().enumerate() {
            let (worker, admission) = launched?;
            ready.push(match admission {
                Admission::Ready { compiled } => {
                    Some((worker, compiled || compiled_for.contains(&i)))
                }
                Admission::Refused(reason) => {
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason,
                    });
                }
                Admission::Ended(_) => None,
            });
        }
        Ok(ready)
    }

    /// Compiles each distinct component of `specs` into the run's cache, in parallel, each in
    /// a worker that only compiles (under the compile budget) and admits it as a plugin.
    /// Returns the indices of the specs whose component was compiled (not found in the cache).
    pub(super) async fn compile_all(
        &self,
        specs: &[&PluginSpec],
        run: &RunContext<'_>,
    ) -> Result<BTreeSet<usize>, SuperviseError> {
        let mut seen = BTreeSet::new();
        let mut new = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let digest = digest(spec);
            if digest.as_ref().is_none_or(|d| seen.insert(d.clone())) {
                new.push((i, digest));
            }
        }
        let launched =
            futures::future::join_all(new.iter().map(|&(i, _)| self.launch(specs[i], run, true)))
                .await;
        let mut compiled_for = BTreeSet::new();
        for ((i, digest), launched) in new.into_iter().zip(launched) {
            match launched?.1 {
                Admission::Ready { compiled } => {
                    if compiled {
                        compiled_for.insert(i);
                    }
                    if let Some(digest) = digest {
                        let _ = run.compiled(&digest).set(());
                    }
                }
                Admission::Refused(reason) => {
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason,
                    });
                }
                Admission::Ended(outcome) => {
                    let why = match outcome.result {
                        Err(failure) => failure.to_string(),
                        Ok(()) => "its compiler ended without a word".into(),
                    };
                    return Err(SuperviseError::Refused {
                        plugin: specs[i].name.clone(),
                        reason: format!("{}: cannot be compiled: {why}", specs[i].name),
                    });
                }
            }
        }
        Ok(compiled_for)
    }

    /// Starts a worker for `spec` (one that only compiles, or one that runs) and waits until
    /// it says whether it admits the plugin.
    async fn launch(
        &self,
        spec: &PluginSpec,
        run: &RunContext<'_>,
        compile_only: bool,
    ) -> Result<(Worker, Admission), SuperviseError> {
        let mut worker = Worker::spawn(&self.worker, spec, run, compile_only).await?;
        let admission = worker.admit().await;
        Ok((worker, admission))
    }

    /// Starts and admits a worker for a plugin that is already part of the run. The first
    /// start of a plugin that came with a reload (or a changed manifest entry) compiles its
    /// component as the run's first start did: in a worker that only compiles, under the
    /// compile budget, not the run worker's; once per component, however many plugins use it.
    pub(super) async fn start(
        &self,
        entry: &Entry,
        run: &RunContext<'_>,
        first: bool,
    ) -> Result<(Worker, bool), Box<Outcome>> {
        entry.set_state(PluginState::Starting);
        let admitted = |admission| match admission {
            Admission::Ready { compiled } => Ok(compiled),
            Admission::Refused(reason) => Err(Box::new(entry.failed(Failure::Worker(reason)))),
            Admission::Ended(outcome) => Err(Box::new(outcome)),
        };
        let launch = |compile_only| async move {
            self.launch(&entry.spec, run, compile_only)
                .await
                .map_err(|e| Box::new(entry.failed(Failure::Worker(e.to_string()))))
        };
        let mut compiled_first = false;
        let new_to_run = first && run.cache.is_some();
        if let Some(digest) = new_to_run.then(|| digest(&entry.spec)).flatten() {
            run.compiled(&digest)
                .get_or_try_init(|| async {
                    compiled_first = admitted(launch(true).await?.1)?;
                    Ok::<(), Box<Outcome>>(())
                })
                .await?;
        }
        let (worker, admission) = launch(false).await?;
        let compiled = admitted(admission)?;
        Ok((worker, compiled || compiled_first))
    }
}
