//! Outbound HTTP (`wasi:http/outgoing-handler`) for plugins whose spec grants hosts
//! ([`AllowedHost`]). wasmtime-wasi-http is built without its own sender: every request is sent
//! by [`send`], which refuses an ungranted destination before any lookup or connection, connects
//! only to public addresses unless a grant names the address, and bounds every wait and both
//! bodies. Each request carries a stable idempotency key (`Idempotency-Key`, `webhook-id`):
//! a digest of the plugin, the batch it works on (the `since` of the poll that delivered it),
//! and the request's method, URL and body. A plugin that retries a request, or replays its
//! batch after a crash, sends the same key; with a secret, the host signs it (Standard Webhooks), and the plugin never
//! sees the secret.

mod address;
mod grant;
mod send;

pub use grant::{AllowedHost, BadHost};

use super::cpu::CpuMeter;
use super::feed::Feed;
use super::output::OutputSink;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderName;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

/// Idle connections kept per destination.
const MAX_IDLE_PER_DESTINATION: usize = 8;

/// Headers only the host sets.
const HOST_HEADERS: [&str; 4] = [
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The host's bounds on a plugin's requests. A plugin may ask for shorter timeouts
/// (`request-options`), never longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// To connect, TLS handshake included.
    pub connect: Duration,
    /// From sending the request to the response's head.
    pub first_byte: Duration,
    /// Between two parts of the response body.
    pub between_bytes: Duration,
    /// For the whole exchange, the response body included.
    pub total: Duration,
    /// The request body.
    pub request_bytes: u64,
    /// The response body.
    pub response_bytes: u64,
    /// Requests in flight at once.
    pub in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(10),
            between_bytes: Duration::from_secs(10),
            total: Duration::from_secs(30),
            request_bytes: 1 << 20,
            response_bytes: 4 << 20,
            in_flight: 16,
        }
    }
}

impl HttpLimits {
    /// These limits, with the timeouts a plugin asked for where they are shorter.
    fn clamped(&self, options: Option<RequestOptions>) -> HttpLimits {
        let options = options.unwrap_or_default();
        let shorter =
            |asked: Option<Duration>, limit: Duration| asked.map_or(limit, |a| a.min(limit));
        HttpLimits {
            connect: shorter(options.connect_timeout, self.connect),
            first_byte: shorter(options.first_byte_timeout, self.first_byte),
            between_bytes: shorter(options.between_bytes_timeout, self.between_bytes),
            ..*self
        }
    }
}

/// What a plugin's requests have done, for `status`.
#[derive(Debug, Default)]
pub(crate) struct HttpStats {
    requests: AtomicU64,
    pub(super) failures: AtomicU64,
    bytes: AtomicU64,
}

impl HttpStats {
    fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Requests sent, requests that failed (no response), and body bytes sent and received.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// What every request of one plugin shares.
pub(crate) struct Shared {
    plugin: String,
    allowed: Vec<AllowedHost>,
    /// The signing key, decoded.
    secret: Option<Vec<u8>>,
    limits: HttpLimits,
    in_flight: Arc<tokio::sync::Semaphore>,
    pool: send::Pool,
    tls: Arc<rustls::ClientConfig>,
    pub(crate) stats: HttpStats,
    /// Where each request is logged, when asked to (`run -v`).
    log: Option<Arc<dyn OutputSink>>,
}

/// A webhook signing secret: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a webhook secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the webhook secret is not a Standard Webhooks secret: expected \"whsec_\" and base64, as `openssl rand -base64 32` gives after the prefix"
)]
pub struct BadSecret;

/// Decodes a Standard Webhooks secret, `whsec_` and base64.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let encoded = secret.strip_prefix("whsec_").ok_or(BadSecret)?;
    BASE64
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
        .ok_or(BadSecret)
}

/// The Standard Webhooks signature of `body` sent as `id` at `timestamp` (Unix seconds, as the
/// `webhook-timestamp` header has it) with the decoded secret `key`: base64 of the HMAC-SHA256
/// of `id.timestamp.body`. A receiver compares it with `webhook-signature` after `v1,`.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// The CPU an answer from the network grants: the host's work on a request (HTTP, TLS) is
/// charged to the plugin's worker, and a plugin making one request per event must not run out
/// of its budget for it. A plugin that computes between requests still does.
const CPU_PER_RESPONSE: Duration = Duration::from_millis(2);

/// The TLS client configuration: rustls with ring and the Mozilla roots, built once a process.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A plugin's outbound HTTP: the hooks wasmtime-wasi-http calls.
pub(crate) struct Outbound {
    shared: Arc<Shared>,
    feed: Arc<Feed>,
    /// The plugin's CPU account, once its store has one.
    pub(crate) meter: Option<Arc<CpuMeter>>,
}

impl Outbound {
    /// The outbound HTTP of `plugin`, granted `allowed` (nothing when empty).
    pub(crate) fn new(
        plugin: &str,
        allowed: Vec<AllowedHost>,
        secret: Option<Vec<u8>>,
        feed: Arc<Feed>,
        log: Option<Arc<dyn OutputSink>>,
    ) -> Self {
        let limits = HttpLimits::default();
        Outbound {
            shared: Arc::new(Shared {
                plugin: plugin.to_owned(),
                allowed,
                secret,
                limits,
                in_flight: Arc::new(tokio::sync::Semaphore::new(limits.in_flight)),
                pool: send::Pool::default(),
                tls: tls_config(),
                stats: HttpStats::default(),
                log,
            }),
            feed,
            meter: None,
        }
    }

    /// The counters of this plugin's requests.
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        self.shared.stats.counts()
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// Whether a plugin may not set header `name`: wasmtime-wasi-http's own list, and the headers
/// the host sets.
fn forbidden(name: &HeaderName) -> bool {
    DEFAULT_FORBIDDEN_HEADERS.contains(name) || HOST_HEADERS.contains(&name.as_str())
}

impl WasiHttpHooks for Outbound {
    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        forbidden(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(forbidden)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let stamp = send::Stamp {
            plugin: self.shared.plugin.clone(),
            since: self.feed.batch_since(),
        };
        let shared = self.shared.clone();
        let meter = self.meter.clone();
        Box::new(async move {
            let started = Instant::now();
            let what = format!("{} {}", request.method(), request.uri());
            shared.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = send::send(shared.clone(), request, options, stamp).await;
            let took = started.elapsed();
            match (&sent, &meter) {
                (Err(_), _) => {
                    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
                (Ok(_), Some(meter)) => meter.credit(CPU_PER_RESPONSE),
                (Ok(_), None) => {}
            }
            if let Some(log) = &shared.log {
                let outcome = match &sent {
                    Ok(sent) => sent.response.status().to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                log.notice(&format!(
                    "plugin {}: http {what}: {outcome} in {took:.1?}",
                    shared.plugin
                ));
            }
            let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                Box::new(async { Ok(()) });
            Ok((sent?.response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
    }

    #[test]
    fn plugins_ask_for_shorter_timeouts_only() {
        let limits = HttpLimits::default();
        let asked = RequestOptions {
            connect_timeout: Some(Duration::from_secs(600)),
            first_byte_timeout: Some(Duration::from_millis(50)),
            between_bytes_timeout: None,
        };
        let clamped = limits.clamped(Some(asked));
        assert_eq!(clamped.connect, limits.connect);
        assert_eq!(clamped.first_byte, Duration::from_millis(50));
        assert_eq!(clamped.between_bytes, limits.between_bytes);
    }
}
