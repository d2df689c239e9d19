//! Whether a component may run as a plugin: what it imports and exports, checked before it is
//! linked so that a refusal names the reason instead of a linker error.

use super::LoadError;
use super::emit::OUTPUT_INTERFACE;
use super::feed::{FEED_INTERFACE, OLDER_FEEDS};
use crate::spec::PluginSpec;
use wasmtime::Engine;
use wasmtime::component::Component;

/// WASI 0.2 packages a plugin may import. Each is backed by a deny-by-default context (see
/// `Runtime::sandbox`): importing `wasi:sockets` or `wasi:filesystem` grants nothing by itself.
const WASI_PACKAGES: [&str; 6] = [
    "wasi:cli",
    "wasi:clocks",
    "wasi:filesystem",
    "wasi:io",
    "wasi:random",
    "wasi:sockets",
];

/// The WASI package of outbound HTTP, linked for plugins granted hosts.
const HTTP_PACKAGE: &str = "wasi:http";

/// The export that makes a component a command.
const RUN_EXPORT: &str = "wasi:cli/run";

/// The WebAssembly preamble: magic, then version and layer. A core module is version 1 layer 0;
/// a component is version 0x0d layer 1.
const MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Whether `bytes` begin as a component does.
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == MAGIC && bytes[4..8] == COMPONENT_VERSION
}

/// Classifies bytes that are not a component before asking the compiler about them.
pub(crate) fn check_preamble(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let name = name.to_owned();
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm { name });
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(LoadError::CoreModule { name });
    }
    Ok(())
}

/// `ns:pkg/iface@1.2.3` split into package (`ns:pkg`) and version (`1.2.3`, or "").
fn package_and_version(import: &str) -> (&str, &str) {
    let (path, version) = import.split_once('@').unwrap_or((import, ""));
    let package = path.split_once('/').map_or(path, |(package, _)| package);
    (package, version)
}

/// Whether `version` is a release semver-compatible with `with` by the component model's rule
/// for 0.x versions: the same major and minor. Pre-releases (`0.2.0-rc-...`) are not.
fn compatible(version: &str, with: &str) -> bool {
    fn major_minor(v: &str) -> Vec<&str> {
        v.splitn(3, '.').take(2).collect()
    }
    let release = version.split('.').count() == 3
        && version
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    release && major_minor(version) == major_minor(with)
}

/// `ns:pkg/iface` without its version.
fn unversioned(import: &str) -> &str {
    import.split_once('@').map_or(import, |(path, _)| path)
}

/// Whether `import` is a version of `interface` (`ns:pkg/iface@x.y.z`) this host serves.
fn serves(import: &str, interface: &str) -> bool {
    unversioned(import) == unversioned(interface)
        && compatible(
            package_and_version(import).1,
            package_and_version(interface).1,
        )
}

fn allowed(import: &str) -> bool {
    let (package, version) = package_and_version(import);
    if package == package_and_version(FEED_INTERFACE).0 {
        return std::iter::once(FEED_INTERFACE)
            .chain(OLDER_FEEDS)
            .chain([OUTPUT_INTERFACE])
            .any(|interface| serves(import, interface));
    }
    WASI_PACKAGES.contains(&package) && compatible(version, "0.2.0")
}

/// Checks that the component imports only what a plugin may (the output only if it is granted
/// output logs, HTTP only if it is granted hosts) and exports `wasi:cli/run`.
pub(crate) fn admit(
    name: &str,
    component: &Component,
    engine: &Engine,
    spec: &PluginSpec,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    if spec.outputs.is_empty()
        && let Some((import, _)) = ty
            .imports(engine)
            .find(|(import, _)| serves(import, OUTPUT_INTERFACE))
    {
        return Err(LoadError::OutputNotGranted {
            name: name.to_owned(),
            import: import.to_owned(),
        });
    }
    let http = |import: &str| {
        let (package, version) = package_and_version(import);
        package == HTTP_PACKAGE && compatible(version, "0.2.0")
    };
    if spec.allowed_outbound_hosts.is_empty()
        && let Some((import, _)) = ty.imports(engine).find(|(import, _)| http(import))
    {
        return Err(LoadError::HttpNotGranted {
            name: name.to_owned(),
            import: import.to_owned(),
        });
    }
    if let Some((import, _)) = ty
        .imports(engine)
        .find(|(import, _)| !allowed(import) && !http(import))
    {
        if package_and_version(import).0 == package_and_version(FEED_INTERFACE).0 {
            return Err(LoadError::FeedVersion {
                name: name.to_owned(),
                import: import.to_owned(),
                serves: FEED_INTERFACE,
            });
        }
        return Err(LoadError::ForbiddenImport {
            name: name.to_owned(),
            import: import.to_owned(),
        });
    }
    let runs = ty.exports(engine).any(|(export, _)| {
        let (path, version) = export.split_once('@').unwrap_or((export, ""));
        path == RUN_EXPORT && compatible(version, "0.2.0")
    });
    if !runs {
        return Err(LoadError::NotACommand {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_feed_and_wasi_0_2_only() {
        assert!(allowed("pulse:watch/feed@0.2.0"));
        assert!(allowed("pulse:watch/feed@0.2.7"));
        assert!(allowed("pulse:watch/feed@0.3.0"));
        assert!(allowed("pulse:watch/output@0.3.1"));
        assert!(!allowed("pulse:watch/output@0.2.0"));
        assert!(!allowed("pulse:watch/other@0.3.0"));
        assert!(!allowed("pulse:watch/feed@0.20.0"));
        assert!(!allowed("pulse:watch/feed@0.1.1"));
        assert!(allowed("wasi:cli/environment@0.2.6"));
        assert!(allowed("wasi:sockets/tcp@0.2.0"));
        assert!(!allowed("pulse:watch/feed@0.4.0"));
        assert!(!allowed("wasi:http/outgoing-handler@0.2.6"));
        assert!(!allowed("wasi:cli/environment@0.3.0"));
        assert!(!allowed("wasi:cli/environment"));
        assert!(!allowed("wasi:cli/environment@0.2.0-rc-2023-12-05"));
        assert!(!allowed("evil:backdoor/shell@1.0.0"));
    }

    #[test]
    fn preamble_tells_modules_and_garbage_apart() {
        assert!(matches!(
            check_preamble("x", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_preamble("x", b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_preamble("x", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
