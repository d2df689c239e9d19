//! `pulsewatch run --cluster NAME`: this host's side of sharing a manifest's plugins with other
//! hosts ([`pulsewatch::jetstream::cluster`]). A thread of its own takes, renews and gives up
//! leases, restores and checkpoints the `/state` of the plugins it holds, and tells the
//! supervisor which plugins to run by a reload.

use pulsewatch::jetstream::StreamAddr;
use pulsewatch::jetstream::cluster::{HOLD, Lease, Member, RENEW_EVERY};
use pulsewatch::{PluginSpec, RunOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a host waits after its first heartbeat before it takes leases, to see the hosts
/// that start with it and take only its share.
const SETTLE: Duration = Duration::from_secs(2);

/// How often the `/state` of each plugin whose cursor moved is checkpointed: what a plugin
/// that moves may process again, with its effects outside `/state`.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The longest any one request may take: a server that does not answer must not keep the
/// loop from stopping plugins whose lease it could not renew.
const REQUEST: Duration = Duration::from_secs(1);

/// This host's name in a cluster: the machine's name and this process's id.
pub fn host_name() -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!("{machine}-{}", std::process::id())
}

/// A plugin this host holds, and what it last checkpointed.
struct Holding {
    lease: Lease,
    renewed: Instant,
    cursor: Option<u64>,
}

/// The controller of one host in a cluster.
pub struct Controller {
    /// The servers, and the stream the plugins read.
    pub addr: StreamAddr,
    /// The cluster's name.
    pub name: String,
    /// Copies of the cluster's buckets: the stream's.
    pub replicas: usize,
    /// Every plugin of the manifest.
    pub specs: Vec<PluginSpec>,
    /// The plugins this host runs: what the supervisor's reload reads.
    pub held: Arc<Mutex<Vec<PluginSpec>>>,
    /// The run's: its stop signal, reload signal and the plugins' cursors.
    pub options: RunOptions,
}

impl Controller {
    /// Runs until the run is stopped and `finished` says the supervisor has ended: then the
    /// plugins' last checkpoints are written and their leases given up.
    pub async fn run(self, finished: Arc<tokio::sync::Notify>) {
        let host = host_name();
        let member = loop {
            match tokio::time::timeout(
                REQUEST * 5,
                Member::join(&self.addr, &self.name, &host, self.replicas),
            )
            .await
            {
                Ok(Ok(member)) => break member,
                Ok(Err(e)) => self.say(&format!("cannot join cluster {}: {e}", self.name)),
                Err(_) => self.say(&format!("cannot join cluster {}: no answer", self.name)),
            }
            tokio::select! {
                () = self.options.stop.stopped() => return,
                () = tokio::time::sleep(RENEW_EVERY * 2) => {}
            }
        };
        self.say(&format!("joined cluster {} as {host}", self.name));
        let _ = timed(member.heartbeat(Vec::new())).await;
        tokio::select! {
            () = self.options.stop.stopped() => return,
            () = tokio::time::sleep(SETTLE) => {}
        }
        let mut holding: BTreeMap<String, Holding> = BTreeMap::new();
        let mut renewals = tokio::time::interval(RENEW_EVERY);
        let mut checkpoints = tokio::time::interval(CHECKPOINT_EVERY);
        while !self.options.stop.is_stopped() {
            let changed = tokio::select! {
                () = self.options.stop.stopped() => break,
                _ = checkpoints.tick() => self.checkpoint(&member, &mut holding).await,
                _ = renewals.tick() => {
                    let (mut changed, renewed) = self.renew(&member, &mut holding).await;
                    // A server that did not answer a renewal would not answer these either:
                    // the loop comes back to the leases without waiting for them.
                    if renewed {
                        changed |= self.take(&member, &mut holding).await;
                        let names = holding.keys().cloned().collect();
                        let _ = timed(member.heartbeat(names)).await;
                    }
                    changed
                }
            };
            if changed {
                self.publish(&holding);
            }
        }
        // The supervisor stops every plugin; then their last state is checkpointed and their
        // leases given up, for the other hosts to take them at once.
        finished.notified().await;
        for (plugin, holding) in &mut holding {
            if holding.renewed.elapsed() >= HOLD {
                continue;
            }
            let dir = self.state_dir(plugin);
            let cursor = self.options.progress.cursor(plugin);
            if let Ok(Ok(true)) = timed(member.checkpoint(&mut holding.lease, &dir, cursor)).await {
                let _ = timed(member.release(&holding.lease)).await;
            }
        }
    }

    /// Renews every lease held, all at once within one [`REQUEST`]; drops those another host
    /// took, and those not renewed for [`HOLD`]. Whether the plugins held changed, and whether
    /// every renewal was answered.
    ///
    /// The bound that keeps a plugin on one host at a time: a loop's pass takes at most a
    /// [`REQUEST`] for checkpoints and one for renewals while the server does not answer, so a
    /// lease not renewed is given up at most [`HOLD`] + 2 s after its last renewal, and its
    /// plugin has stopped a grace period (at most 2 s) later: 9 s, within the 10 s the server
    /// keeps the lease.
    async fn renew(
        &self,
        member: &Member,
        holding: &mut BTreeMap<String, Holding>,
    ) -> (bool, bool) {
        let renewals = holding.values_mut().map(|held| async {
            let renewed = member.renew(&mut held.lease).await;
            (held, renewed)
        });
        let answers = timed(futures::future::join_all(renewals)).await;
        let answered = answers.is_ok();
        let mut lost = Vec::new();
        if let Ok(answers) = answers {
            for (held, renewed) in answers {
                match renewed {
                    Ok(true) => held.renewed = Instant::now(),
                    Ok(false) => lost.push((held.lease.plugin.clone(), "another host holds it")),
                    Err(_) => {}
                }
            }
        }
        for (plugin, held) in holding.iter() {
            if held.renewed.elapsed() >= HOLD && !lost.iter().any(|(p, _)| p == plugin) {
                lost.push((plugin.clone(), "it could not be renewed in time"));
            }
        }
        for (plugin, why) in &lost {
            holding.remove(plugin);
            self.say(&format!(
                "plugin {plugin}: lease lost ({why}): stopping it here"
            ));
        }
        (!lost.is_empty(), answered)
    }

    /// Checkpoints each plugin held whose cursor moved, all at once within one [`REQUEST`];
    /// drops those whose checkpoint another host wrote meanwhile. Whether the plugins held
    /// changed.
    async fn checkpoint(&self, member: &Member, holding: &mut BTreeMap<String, Holding>) -> bool {
        let writes = holding.values_mut().filter_map(|held| {
            let cursor = self.options.progress.cursor(&held.lease.plugin);
            if cursor == held.cursor {
                return None;
            }
            Some(async move {
                let dir = self.state_dir(&held.lease.plugin);
                let written = member.checkpoint(&mut held.lease, &dir, cursor).await;
                (held, cursor, written)
            })
        });
        let Ok(answers) = timed(futures::future::join_all(writes)).await else {
            return false;
        };
        let mut fenced = Vec::new();
        for (held, cursor, written) in answers {
            match written {
                Ok(true) => held.cursor = cursor,
                Ok(false) => fenced.push(held.lease.plugin.clone()),
                Err(e) => self.say(&format!("plugin {}: {e}", held.lease.plugin)),
            }
        }
        for plugin in &fenced {
            holding.remove(plugin);
            self.say(&format!(
                "plugin {plugin}: another host wrote its checkpoint: stopping it here"
            ));
        }
        !fenced.is_empty()
    }

    /// Takes a free plugin if this host holds less than its share (the plugins over the live
    /// hosts, rounded up), restoring its `/state` first: one a pass, so that a pass stays
    /// short. Whether the plugins held changed.
    async fn take(&self, member: &Member, holding: &mut BTreeMap<String, Holding>) -> bool {
        let hosts = match timed(member.hosts()).await {
            Ok(Ok(hosts)) => hosts.len().max(1),
            _ => return false,
        };
        let share = self.specs.len().div_ceil(hosts);
        for spec in &self.specs {
            if holding.len() >= share {
                break;
            }
            // Still stopping here after a lease was lost: not until it has.
            if holding.contains_key(&spec.name)
                || pulsewatch::supervisor::state_in_use(&spec.state_dir)
            {
                continue;
            }
            let Ok(Ok(Some(mut lease))) = timed(member.acquire(&spec.name)).await else {
                continue;
            };
            match timed(member.restore(&mut lease, &spec.state_dir)).await {
                Ok(Ok(())) => {
                    self.say(&format!("plugin {}: taken", spec.name));
                    holding.insert(
                        spec.name.clone(),
                        Holding {
                            lease,
                            renewed: Instant::now(),
                            cursor: None,
                        },
                    );
                    return true;
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_owned(),
                    };
                    self.say(&format!(
                        "plugin {}: cannot restore its state: {why}",
                        spec.name
                    ));
                    let _ = timed(member.release(&lease)).await;
                }
            }
        }
        false
    }

    /// Tells the supervisor to run the plugins held.
    fn publish(&self, holding: &BTreeMap<String, Holding>) {
        let specs = self
            .specs
            .iter()
            .filter(|s| holding.contains_key(&s.name))
            .cloned()
            .collect();
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = specs;
        self.options.reload.request();
    }

    fn state_dir(&self, plugin: &str) -> std::path::PathBuf {
        self.specs
            .iter()
            .find(|s| s.name == plugin)
            .map(|s| s.state_dir.clone())
            .expect("a plugin held is one of the manifest's")
    }

    fn say(&self, text: &str) {
        say!("pulsewatch: {text}");
    }
}

/// `request`, or an error after [`REQUEST`].
async fn timed<T>(request: impl Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(REQUEST, request).await
}

/// `pulsewatch status --cluster NAME`: each host with its heartbeat's age and plugins, then each
/// plugin with its host and the cursor of its last checkpoint.
pub fn status(
    db: &std::path::Path,
    name: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let addr = StreamAddr::from_location(db).transpose()?.ok_or_else(|| {
        anyhow::anyhow!("--cluster reads JetStream: give --db nats://HOST:PORT/STREAM")
    })?;
    let (hosts, held) = super::jetstream::block_on(async {
        let member = Member::join(&addr, name, "", 1).await?;
        anyhow::Ok((member.hosts().await?, member.held().await?))
    })??;
    if json {
        let plugins: Vec<_> = held
            .iter()
            .map(|h| serde_json::json!({"plugin": h.plugin, "host": h.host, "cursor": h.cursor}))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"hosts": hosts, "plugins": plugins}))?
        )?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let now = pulsewatch::now_ms();
    out!("cluster {name}: {} hosts", hosts.len())?;
    for host in &hosts {
        out!(
            "  host {} (pid {}): heartbeat {} ms ago, runs {}",
            host.host,
            host.pid,
            now.saturating_sub(host.at_ms),
            if host.plugins.is_empty() {
                "nothing".to_owned()
            } else {
                host.plugins.join(", ")
            }
        )?;
    }
    for h in &held {
        out!(
            "  plugin {} on {}, checkpointed at {}",
            h.plugin,
            h.host,
            h.cursor.map_or("-".to_owned(), |c| c.to_string())
        )?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}
