//! Bundling: a plugin composed with the provider component, which serves `pulse:watch/feed`
//! from a snapshot in the sandbox itself, into one component that imports only WASI and so runs
//! under the stock `wasmtime run`, where pulsewatch is not installed.
//!
//! The composition is done in-process with `wac-graph`, the library behind the `wac` tool; the
//! provider is built from `guest/provider` and embedded in this binary.

use crate::runtime::{FEED_INTERFACE, is_component};
use pulsewatch_log::provider::{DB_PATH_MARKER, DB_PATH_SLOT, MAX_DB_PATH, db_path_slot};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, PlugError};

/// The provider component, as built.
const PROVIDER: &[u8] = include_bytes!(concat!(
    env!("PULSEWATCH_GUEST_DIR"),
    "/pulsewatch_provider.wasm"
));

/// The WASI 0.2 packages a bundle may import: every one a WASI host such as `wasmtime run`
/// provides.
const WASI: &str = "wasi:";

/// Why a plugin could not be bundled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bytes are not a WebAssembly component.
    #[error(
        "{name}: not a WebAssembly component (a plugin is a component built for wasm32-wasip2)"
    )]
    NotAComponent {
        /// The plugin.
        name: String,
    },
    /// The component does not read the feed: there is nothing to bundle it with.
    #[error(
        "{name}: does not import `pulse:watch/feed`: it reads no feed, so there is nothing to bundle it with"
    )]
    NoFeedImport {
        /// The plugin.
        name: String,
    },
    /// The database path cannot be stored in the provider.
    #[error("database path {path:?} is too long (at most {MAX_DB_PATH} bytes) or holds a NUL")]
    BadDbPath {
        /// The path asked for.
        path: String,
    },
    /// The composed component still imports something a WASI host does not provide.
    #[error("{name}: imports `{import}`, which neither the provider nor a WASI host provides")]
    Unprovided {
        /// The plugin.
        name: String,
        /// The import left over.
        import: String,
    },
    /// wac-graph could not compose or encode the two.
    #[error("{name}: cannot be composed with the provider: {reason}")]
    Compose {
        /// The plugin.
        name: String,
        /// What wac-graph reported.
        reason: String,
    },
}

/// Whether the component `bytes` imports `pulse:watch/output`: it emits derived events, and a
/// bundle of it needs its outputs named when it runs.
pub fn emits(bytes: &[u8]) -> bool {
    let mut graph = CompositionGraph::new();
    Package::from_bytes("pulse:plugin", None, bytes, graph.types_mut()).is_ok_and(|plugin| {
        graph.types()[plugin.ty()]
            .imports
            .keys()
            .any(|import| import.starts_with("pulse:watch/output@"))
    })
}

/// The provider component, serving the snapshot at `db_path` (a path the plugin's WASI host
/// preopens, such as `/data/events.redb`).
pub fn provider(db_path: &str) -> Result<Vec<u8>, BundleError> {
    let bad_path = || BundleError::BadDbPath {
        path: db_path.to_owned(),
    };
    let slot = db_path_slot(db_path.as_bytes()).ok_or_else(bad_path)?;
    let mut provider = PROVIDER.to_vec();
    let at = provider
        .windows(DB_PATH_MARKER.len())
        .position(|w| w == DB_PATH_MARKER)
        .expect("the provider holds its path slot");
    provider[at..at + DB_PATH_SLOT].copy_from_slice(&slot);
    Ok(provider)
}

/// Composes the plugin `name` (component bytes) with the provider serving `db_path`: the
/// provider's `pulse:watch/feed` export fills the plugin's import, and the result exports what
/// the plugin exports and imports only WASI.
pub fn bundle(name: &str, plugin: &[u8], db_path: &str) -> Result<Vec<u8>, BundleError> {
    let provider = provider(db_path)?;
    let compose = |e: &dyn std::fmt::Display| BundleError::Compose {
        name: name.to_owned(),
        reason: e.to_string(),
    };
    if !is_component(plugin) {
        return Err(BundleError::NotAComponent {
            name: name.to_owned(),
        });
    }
    let mut graph = CompositionGraph::new();
    let plugin = Package::from_bytes("pulse:plugin", None, plugin, graph.types_mut())
        .map_err(|e| compose(&format!("{e:#}")))?;
    let (feed, _version) = FEED_INTERFACE
        .split_once('@')
        .unwrap_or((FEED_INTERFACE, ""));
    let reads_feed = graph.types()[plugin.ty()]
        .imports
        .keys()
        .any(|import| import.split_once('@').is_some_and(|(path, _)| path == feed));
    if !reads_feed {
        return Err(BundleError::NoFeedImport {
            name: name.to_owned(),
        });
    }
    let provider = Package::from_bytes("pulse:provider", None, provider, graph.types_mut())
        .map_err(|e| compose(&format!("{e:#}")))?;
    let plugin = graph.register_package(plugin).map_err(|e| compose(&e))?;
    let provider = graph.register_package(provider).map_err(|e| compose(&e))?;
    wac_graph::plug(&mut graph, vec![provider], plugin).map_err(|e| match e {
        PlugError::NoPlugHappened => BundleError::Compose {
            name: name.to_owned(),
            reason: format!(
                "its `pulse:watch/feed` import does not match this provider's, `{FEED_INTERFACE}`: \
                 rebuild it with the current guest SDK to bundle it (`pulsewatch run` runs it as \
                 it is)"
            ),
        },
        other => compose(&format!("{:#}", anyhow::Error::from(other))),
    })?;
    let bundled = graph
        .encode(EncodeOptions::default())
        .map_err(|e| compose(&format!("{:#}", anyhow::Error::from(e))))?;

    let mut check = CompositionGraph::new();
    let composed = Package::from_bytes("pulse:bundle", None, bundled.as_slice(), check.types_mut())
        .map_err(|e| compose(&format!("{e:#}")))?;
    if let Some(import) = check.types()[composed.ty()]
        .imports
        .keys()
        .find(|import| !import.starts_with(WASI))
    {
        return Err(BundleError::Unprovided {
            name: name.to_owned(),
            import: import.clone(),
        });
    }
    Ok(bundled)
}
