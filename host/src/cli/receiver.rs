//! The demo's webhook receiver: a small HTTP server on loopback that checks each delivery's
//! Standard Webhooks signature and counts deliveries by their `webhook-id`, as a receiver that
//! drops duplicates would.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use pulsewatch::decode_secret;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// What the receiver has seen.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Requests received.
    pub requests: u64,
    /// Distinct `webhook-id`s among them.
    pub ids: HashSet<String>,
    /// Requests whose signature did not check out.
    pub bad_signatures: u64,
    /// The last body.
    pub last: Option<String>,
}

/// A receiver running on its own thread for as long as the process.
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port, checking signatures with `secret`.
    pub fn start(secret: &str) -> anyhow::Result<Receiver> {
        let key = decode_secret(secret)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        super::http::serve(listener, move |request| {
            receive(request, shared.clone(), key.clone())
        })?;
        Ok(Receiver { addr, seen })
    }

    /// What it has seen so far.
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn receive(
    request: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
    key: Vec<u8>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = request.into_body().collect().await?.to_bytes();
    let expected = format!(
        "v1,{}",
        pulsewatch::webhook_signature(&key, &id, &timestamp, &body)
    );
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.requests += 1;
    if signature != expected {
        seen.bad_signatures += 1;
    }
    seen.ids.insert(id);
    seen.last = Some(String::from_utf8_lossy(&body).into_owned());
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
