//! Components that must not run are refused before they start, with an error naming the
//! reason, through the library and through the CLI (non-zero exit, no panic).

mod common;

use common::{guest, pulsewatch, text};
use pulsewatch::{LoadError, PluginSpec, Runtime};
use std::path::Path;

/// Why `bytes`, as a component file, cannot be loaded.
fn load(bytes: &[u8]) -> LoadError {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("candidate.wasm");
    std::fs::write(&file, bytes).unwrap();
    let spec = PluginSpec::from_file(file, dir.path()).unwrap();
    Runtime::new().unwrap().load(&spec).unwrap_err()
}

fn core_module() -> Vec<u8> {
    wat::parse_str(r#"(module (func (export "_start")))"#).unwrap()
}

#[test]
fn garbage_bytes_are_not_webassembly() {
    assert!(matches!(
        load(b"#!/bin/sh\nrm -rf /\n"),
        LoadError::NotWasm { .. }
    ));
    assert!(matches!(load(b""), LoadError::NotWasm { .. }));
}

#[test]
fn a_truncated_component_is_invalid() {
    let bytes = std::fs::read(guest("kind-counts")).unwrap();
    let err = load(&bytes[..bytes.len() / 2]);
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
}

#[test]
fn a_core_module_is_refused_with_a_hint() {
    let err = load(&core_module());
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn a_forbidden_import_is_refused_by_name() {
    for (program, expected) in [
        ("forbidden-http", "wasi:http/outgoing-handler@0.3.0-draft"),
        ("forbidden-import", "wasi:keyvalue/store@0.2.0-draft"),
    ] {
        let err = load(&std::fs::read(guest(program)).unwrap());
        match &err {
            LoadError::ForbiddenImport { import, .. } => assert_eq!(import, expected),
            other => panic!("{program}: expected ForbiddenImport, got {other}"),
        }
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn a_component_without_a_run_export_is_refused() {
    let err = load(&std::fs::read(guest("no_run")).unwrap());
    assert!(matches!(err, LoadError::NotACommand { .. }), "{err}");
}

#[test]
fn a_name_that_is_not_a_plain_file_name_is_refused() {
    let root = Path::new("state");
    for name in [
        "../escape",
        "/abs",
        "a/b",
        "a\\b",
        "..",
        ".",
        "",
        ".hidden",
        "a\rb",
        "\x1b[2J",
    ] {
        let err = PluginSpec::named(name, guest("kind-counts"), root).unwrap_err();
        assert_eq!(err.name, name);
        assert!(
            err.to_string().contains("not a usable plugin name"),
            "{err}"
        );
    }
    // A spec's fields are public: the runtime checks the name again.
    let mut spec = PluginSpec::named("kind-counts.v2", guest("kind-counts"), root).unwrap();
    let runtime = Runtime::new().unwrap();
    assert!(runtime.load(&spec).is_ok());
    spec.name = "../escape".into();
    assert!(matches!(
        runtime.load(&spec),
        Err(LoadError::BadName { .. })
    ));
}

fn cli_run(plugin: &Path) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.redb");
    pulsewatch::Log::create(&db).unwrap();
    let out = pulsewatch(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        plugin.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap(), stderr)
}

#[test]
fn the_cli_refuses_each_with_exit_status_2_and_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, core_module()).unwrap();
    let cases = [
        (garbage, "not a WebAssembly component"),
        (module, "core WebAssembly module"),
        (
            guest("forbidden-import"),
            "imports `wasi:keyvalue/store@0.2.0-draft`",
        ),
        (guest("no_run"), "exports no `wasi:cli/run"),
        (dir.path().join("absent.wasm"), "absent.wasm: cannot read"),
    ];
    for (path, expected) in cases {
        let (code, stderr) = cli_run(&path);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(expected), "{path:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
