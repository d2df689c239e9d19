//! Builds the guest components in `guest/` for `wasm32-wasip2` with the same toolchain, so
//! that `cargo run` and `cargo test` need no extra step. The demo embeds the example plugins;
//! tests and benchmarks find every guest through the `PULSEWATCH_GUEST_DIR` variable.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let guest = root.join("guest");
    // The provider component is built from `log/` too.
    for watched in ["guest", "wit", "log"] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }

    // A target directory of the guests' own, shared by every host profile: the host's profile
    // directories (debug, release) sit under the same parent.
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map_or_else(|| out_dir.join("guest-target"), |t| t.join("guest"));

    ensure_target();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host (coverage, sanitizers, -D warnings for clippy) do not apply
        // to the wasm target.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("cannot run cargo to build the guest components");
    if !status.success() {
        fail(&format!(
            "building the guest components in {} failed (see the errors above)",
            guest.display()
        ));
    }
    let dir = target_dir.join(TARGET).join("release");
    println!("cargo::rustc-env=PULSEWATCH_GUEST_DIR={}", dir.display());
}

/// The wasm32-wasip2 standard library must be installed. With rustup present, install it
/// rather than fail: a fresh checkout then builds with plain `cargo run` / `cargo test`.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    println!("cargo::warning=installing the {TARGET} target with `rustup target add {TARGET}`");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        fail(&format!(
            "the {TARGET} target is not installed and rustup could not add it; \
             run `rustup target add {TARGET}` and build again"
        ));
    }
}

/// Stops the build with a message and no build-script backtrace.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
