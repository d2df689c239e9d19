//! What can go wrong: loading a component, setting up the engine, running a plugin.

use std::path::PathBuf;

/// Why a component cannot be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The name cannot be used: it names the plugin's state directory, so it must be one
    /// plain path component.
    #[error(
        "{name:?}: not a usable plugin name (it must be a plain file name, without / or \\, not starting with a dot)"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// The bytes are not WebAssembly.
    #[error("{name}: not a WebAssembly component (no \\0asm header)")]
    NotWasm {
        /// The plugin.
        name: String,
    },
    /// A core module, not a component.
    #[error(
        "{name}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The plugin.
        name: String,
    },
    /// The component does not validate or compile.
    #[error("{name}: invalid component: {reason}")]
    Invalid {
        /// The plugin.
        name: String,
        /// What the validator reported.
        reason: String,
    },
    /// The component imports something plugins are not granted.
    #[error(
        "{name}: imports `{import}`, which plugins are not granted (allowed: pulse:watch/*@0.1, and WASI 0.2 cli, clocks, filesystem, io, random, sockets)"
    )]
    ForbiddenImport {
        /// The plugin.
        name: String,
        /// The import's full name.
        import: String,
    },
    /// The component is not a command.
    #[error(
        "{name}: exports no `wasi:cli/run@0.2`; a plugin is a WASI command (a Rust `fn main` built for wasm32-wasip2)"
    )]
    NotACommand {
        /// The plugin.
        name: String,
    },
    /// An admitted component still failed to link (an import's signature does not match).
    #[error("{name}: cannot be linked: {reason}")]
    Link {
        /// The plugin.
        name: String,
        /// What the linker reported.
        reason: String,
    },
}

/// Why the runtime itself could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly runtime: {0}")]
pub struct SetupError(pub(crate) String);

/// Why a plugin did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// It exited with a non-zero status (or returned an error from `main`).
    #[error("exited with status {0}")]
    Exit(i32),
    /// It computed past its fuel budget without calling the feed.
    #[error("stopped: used its CPU budget of {0} fuel without calling the feed")]
    CpuBudget(u64),
    /// It tried to grow its memory past the limit.
    #[error("stopped: tried to grow memory past its limit of {} MiB", .0 >> 20)]
    Memory(usize),
    /// It tried to grow a table past the limit.
    #[error("stopped: tried to grow a table past its limit of {0} elements")]
    Table(usize),
    /// It overflowed its call stack.
    #[error("stopped: call stack overflow (unbounded recursion?)")]
    StackOverflow,
    /// It trapped, for example on a Rust panic (`unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The host could not give it what it needs (its state directory, ...).
    #[error("could not be started: {0}")]
    Setup(String),
}
