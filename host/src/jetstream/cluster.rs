//! Hosts sharing plugins: several hosts read one stream, and each plugin of their manifest runs
//! on exactly one of them at a time, by a lease in a JetStream key-value bucket. A plugin's
//! `/state` (its cursor with it) is checkpointed in another bucket, each write fenced by a
//! revision check, so that a plugin that moves resumes where it was, and a host that lost a
//! plugin cannot overwrite its state.
//!
//! - **Leases** (`pulsewatch_<cluster>_leases`, one key a plugin): taken with a create that
//!   fails if the key exists, renewed with an update that fails unless the holder's revision is
//!   the last. The bucket's `max_age` is [`LEASE`]: a key not renewed for that long is gone, and
//!   another host's create succeeds. A holder that has not renewed for [`HOLD`] stops the plugin,
//!   well before the key can go.
//! - **Hosts** (`pulsewatch_<cluster>_hosts`): each host's heartbeat, gone [`LEASE`] after the
//!   last one: how many hosts share the plugins, and what `status` shows.
//! - **Checkpoints** (`pulsewatch_<cluster>_state`, one key a plugin): the files of its
//!   `/state`. A host that takes a plugin first rewrites its checkpoint, which moves the key's
//!   revision on; every later write expects the revision it last wrote. A host that lost the
//!   plugin, even one paused past its lease and resumed, meets a revision that moved and
//!   writes nothing.

use super::{JetStreamError, StreamAddr, connect};
use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long a lease lasts after its last renewal, as the server keeps it.
pub const LEASE: Duration = Duration::from_secs(10);

/// How long a holder keeps a plugin running without renewing its lease: half of [`LEASE`],
/// leaving the plugin its grace period to stop before another host can take it.
pub const HOLD: Duration = Duration::from_secs(5);

/// How often leases are renewed and free ones looked for.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The largest checkpoint of a plugin's `/state`: under the server's default message size.
const MAX_CHECKPOINT: usize = 900 << 10;

/// One host's membership in a cluster.
pub struct Member {
    /// This host's name in the cluster.
    host: String,
    leases: kv::Store,
    hosts: kv::Store,
    state: kv::Store,
}

/// A plugin this host holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The plugin.
    pub plugin: String,
    /// The lease key's revision this host wrote last.
    revision: u64,
    /// The checkpoint key's revision this host wrote last: what its next write expects.
    checkpoint: u64,
}

/// What a lease key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    host: String,
}

/// A host's heartbeat, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Its name in the cluster.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The plugins it holds.
    pub plugins: Vec<String>,
    /// When it wrote this, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A checkpoint of a plugin's `/state`.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The host that wrote it.
    host: String,
    /// The plugin's cursor when it was taken, if known.
    cursor: Option<u64>,
    /// Each file by its path under `/state`, base64.
    files: BTreeMap<String, String>,
}

/// Who holds a plugin, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The plugin.
    pub plugin: String,
    /// The host holding it.
    pub host: String,
    /// Its cursor at its last checkpoint.
    pub cursor: Option<u64>,
}

/// Checks a cluster's name: it names the cluster's buckets.
pub fn check_name(name: &str) -> Result<(), JetStreamError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(JetStreamError::BadName(format!(
            "cluster {name:?}: a cluster name is letters, digits, '-' and '_', at most 64 of them"
        )))
    }
}

/// Checks the name of a plugin shared by hosts: it is a key of the cluster's buckets, which
/// take fewer characters than a manifest's names.
pub fn check_plugin(plugin: &str) -> Result<&str, JetStreamError> {
    let valid = !plugin.starts_with('.')
        && plugin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=.".contains(&b));
    if valid {
        Ok(plugin)
    } else {
        Err(JetStreamError::BadName(format!(
            "plugin {plugin:?}: a plugin shared by hosts is named with letters, digits, '-', \
             '_', '=' and '.'"
        )))
    }
}

/// What this host's lease keys hold.
fn holder(host: &str) -> bytes::Bytes {
    serde_json::to_vec(&Holder {
        host: host.to_owned(),
    })
    .expect("a holder serializes")
    .into()
}

impl Member {
    /// Joins cluster `name` on the servers of `addr` as `host`, making its buckets (with
    /// `replicas` copies) if they are missing. With an empty `host`, only looks at a cluster
    /// that exists (what `status` does), making nothing.
    pub async fn join(
        addr: &StreamAddr,
        name: &str,
        host: &str,
        replicas: usize,
    ) -> Result<Member, JetStreamError> {
        check_name(name)?;
        let js = jetstream::new(connect(addr).await?);
        let bucket = |what: &str, max_age: Duration| kv::Config {
            bucket: format!("pulsewatch_{name}_{what}"),
            history: 1,
            max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        let open = |config: kv::Config| {
            let js = js.clone();
            async move {
                match js.get_key_value(&config.bucket).await {
                    Ok(store) => Ok(store),
                    Err(_) if host.is_empty() => Err(JetStreamError::BadName(format!(
                        "cluster {name:?}: no host has joined it on these servers"
                    ))),
                    Err(_) => js.create_key_value(config).await.map_err(|e| {
                        JetStreamError::unavailable("cannot make the cluster's buckets", e)
                    }),
                }
            }
        };
        Ok(Member {
            host: host.to_owned(),
            leases: open(bucket("leases", LEASE)).await?,
            hosts: open(bucket("hosts", LEASE)).await?,
            state: open(bucket("state", Duration::ZERO)).await?,
        })
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Writes this host's heartbeat.
    pub async fn heartbeat(&self, plugins: Vec<String>) -> Result<(), JetStreamError> {
        let info = HostInfo {
            host: self.host.clone(),
            pid: std::process::id(),
            plugins,
            at_ms: pulsewatch_log::now_ms(),
        };
        let value = serde_json::to_vec(&info).expect("a heartbeat serializes");
        self.hosts
            .put(&self.host, value.into())
            .await
            .map_err(|e| JetStreamError::unavailable("cannot write the heartbeat", e))?;
        Ok(())
    }

    /// The hosts whose heartbeat is current.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>, JetStreamError> {
        let mut hosts = Vec::new();
        for name in keys(&self.hosts).await? {
            if let Ok(Some(value)) = self.hosts.get(&name).await
                && let Ok(info) = serde_json::from_slice(&value)
            {
                hosts.push(info);
            }
        }
        Ok(hosts)
    }

    /// Takes the lease of `plugin` if no host holds it; `None` if one does.
    pub async fn acquire(&self, plugin: &str) -> Result<Option<Lease>, JetStreamError> {
        match self
            .leases
            .create(check_plugin(plugin)?, holder(&self.host))
            .await
        {
            Ok(revision) => Ok(Some(Lease {
                plugin: plugin.to_owned(),
                revision,
                checkpoint: 0,
            })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(JetStreamError::unavailable("cannot take a lease", e)),
        }
    }

    /// Renews `lease`; `false` if another host holds it now.
    pub async fn renew(&self, lease: &mut Lease) -> Result<bool, JetStreamError> {
        match self
            .leases
            .update(&lease.plugin, holder(&self.host), lease.revision)
            .await
        {
            Ok(revision) => {
                lease.revision = revision;
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(JetStreamError::unavailable("cannot renew a lease", e)),
        }
    }

    /// Gives `lease` up, so that another host takes the plugin at once.
    pub async fn release(&self, lease: &Lease) -> Result<(), JetStreamError> {
        self.leases
            .purge_expect_revision(&lease.plugin, Some(lease.revision))
            .await
            .map_err(|e| JetStreamError::unavailable("cannot give a lease up", e))
    }

    /// Who holds each plugin, with its cursor at its last checkpoint.
    pub async fn held(&self) -> Result<Vec<Held>, JetStreamError> {
        let mut held = Vec::new();
        for plugin in keys(&self.leases).await? {
            let Ok(Some(value)) = self.leases.get(&plugin).await else {
                continue;
            };
            let Ok(holder) = serde_json::from_slice::<Holder>(&value) else {
                continue;
            };
            let cursor = match self.state.get(&plugin).await {
                Ok(Some(value)) => serde_json::from_slice::<Checkpoint>(&value)
                    .ok()
                    .and_then(|c| c.cursor),
                _ => None,
            };
            held.push(Held {
                plugin,
                host: holder.host,
                cursor,
            });
        }
        Ok(held)
    }

    /// Makes `dir` the plugin's `/state` as last checkpointed (empty if it never was), and
    /// claims the checkpoint for `lease`: rewritten by this host, so that any other host's
    /// write to it from now on fails.
    pub async fn restore(&self, lease: &mut Lease, dir: &Path) -> Result<(), JetStreamError> {
        let entry = self
            .state
            .entry(&lease.plugin)
            .await
            .map_err(|e| JetStreamError::unavailable("cannot read a checkpoint", e))?
            .filter(|e| e.operation == kv::Operation::Put);
        let checkpoint = match &entry {
            Some(entry) => serde_json::from_slice::<Checkpoint>(&entry.value)
                .map_err(|e| JetStreamError::unavailable("a checkpoint it cannot read", e))?,
            None => Checkpoint {
                host: self.host.clone(),
                cursor: None,
                files: BTreeMap::new(),
            },
        };
        write_files(dir, &checkpoint.files).map_err(|e| {
            JetStreamError::unavailable(&format!("cannot restore {}", dir.display()), e)
        })?;
        let claimed = Checkpoint {
            host: self.host.clone(),
            ..checkpoint
        };
        let value = serde_json::to_vec(&claimed).expect("a checkpoint serializes");
        let written = match &entry {
            Some(entry) => self
                .state
                .update(&lease.plugin, value.into(), entry.revision)
                .await
                .map_err(|e| JetStreamError::unavailable("cannot claim a checkpoint", e))?,
            None => self
                .state
                .create(&lease.plugin, value.into())
                .await
                .map_err(|e| JetStreamError::unavailable("cannot claim a checkpoint", e))?,
        };
        lease.checkpoint = written;
        Ok(())
    }

    /// Checkpoints the files of `dir`, the plugin's `/state`, at `cursor`. `false` if another
    /// host wrote the checkpoint since this one last did: the plugin is no longer this host's,
    /// and nothing was written.
    pub async fn checkpoint(
        &self,
        lease: &mut Lease,
        dir: &Path,
        cursor: Option<u64>,
    ) -> Result<bool, JetStreamError> {
        let files = read_files(dir).map_err(|e| {
            JetStreamError::unavailable(&format!("cannot read {}", dir.display()), e)
        })?;
        let value = serde_json::to_vec(&Checkpoint {
            host: self.host.clone(),
            cursor,
            files,
        })
        .expect("a checkpoint serializes");
        if value.len() > MAX_CHECKPOINT {
            return Err(JetStreamError::unavailable(
                "cannot checkpoint",
                format!(
                    "the plugin's /state holds {} KiB, more than the {} KiB a checkpoint takes",
                    value.len() >> 10,
                    MAX_CHECKPOINT >> 10
                ),
            ));
        }
        match self
            .state
            .update(&lease.plugin, value.into(), lease.checkpoint)
            .await
        {
            Ok(revision) => {
                lease.checkpoint = revision;
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(JetStreamError::unavailable("cannot checkpoint", e)),
        }
    }
}

/// The keys of `store` now.
async fn keys(store: &kv::Store) -> Result<Vec<String>, JetStreamError> {
    use futures::TryStreamExt;
    let keys = store
        .keys()
        .await
        .map_err(|e| JetStreamError::unavailable("cannot list a bucket", e))?;
    keys.try_collect()
        .await
        .map_err(|e| JetStreamError::unavailable("cannot list a bucket", e))
}

/// Every regular file under `dir`, by its path relative to it.
fn read_files(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        let entries = match std::fs::read_dir(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && at == dir => break,
            entries => entries?,
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                let name = path
                    .strip_prefix(dir)
                    .map_err(std::io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                let bytes = std::fs::read(&path)?;
                files.insert(
                    name,
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
        }
    }
    Ok(files)
}

/// Makes `dir` hold exactly `files`.
fn write_files(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<()> {
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    for (name, data) in files {
        let relative = Path::new(name);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(std::io::Error::other(format!(
                "a checkpoint names a file outside /state: {name}"
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(std::io::Error::other)?;
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}
