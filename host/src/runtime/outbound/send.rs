//! Sending one request: checked against the grants, resolved, its addresses checked, connected
//! to exactly those addresses (so a name that resolves differently a moment later changes
//! nothing), over TLS with rustls for `https`, with every wait bounded and both bodies capped.
//! Connections are kept alive per plugin and destination, and reused.

use super::address::is_public;
use super::grant::default_port;
use super::{HttpLimits, Shared};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

type Connection = SendRequest<Full<Bytes>>;

/// Where a connection goes: scheme, host and port as the request named them.
type Destination = (String, String, u16);

/// Idle connections, by destination.
#[derive(Default)]
pub(crate) struct Pool(Mutex<HashMap<Destination, Vec<Connection>>>);

impl Pool {
    fn take(&self, to: &Destination) -> Option<Connection> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(to)?;
        while let Some(connection) = list.pop() {
            if !connection.is_closed() {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, to: Destination, connection: Connection) {
        if connection.is_closed() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(to).or_default();
        // A few are worth keeping; a burst past them opens new ones.
        if list.len() < super::MAX_IDLE_PER_DESTINATION {
            list.push(connection);
        }
    }
}

/// What a request's idempotency key is made of, besides the request itself.
pub(crate) struct Stamp {
    pub(crate) plugin: String,
    /// The `since` of the poll that delivered the batch the plugin works on.
    pub(crate) since: u64,
}

impl Stamp {
    /// The key of a request: the same for the same request in the same batch, whether retried
    /// or replayed after a crash from the plugin's last commit.
    fn key(&self, method: &http::Method, uri: &http::Uri, body: &[u8]) -> String {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        for part in [
            self.plugin.as_bytes(),
            &self.since.to_le_bytes(),
            method.as_str().as_bytes(),
            uri.to_string().as_bytes(),
        ] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        digest.update(body);
        let hex: String = digest.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("msg_{hex}")
    }
}

/// The result of one exchange, for the counters and the log.
pub(crate) struct Sent {
    pub(crate) response: Response<WasiBody>,
}

/// Sends `request` for a plugin, as its grants and the host's limits allow.
pub(crate) async fn send(
    shared: Arc<Shared>,
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
    stamp: Stamp,
) -> Result<Sent, Error> {
    let permit = shared
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::ConnectionLimitReached)?;
    let limits = shared.limits.clamped(options);
    let deadline = Instant::now() + limits.total;
    let exchange = exchange(&shared, request, &limits, stamp, deadline, permit);
    tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .unwrap_or(Err(Error::HttpResponseTimeout))
}

async fn exchange(
    shared: &Arc<Shared>,
    request: Request<WasiBody>,
    limits: &HttpLimits,
    stamp: Stamp,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
) -> Result<Sent, Error> {
    let (mut parts, body) = request.into_parts();
    let scheme = parts.uri.scheme_str().unwrap_or("https").to_owned();
    let host = parts
        .uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = parts
        .uri
        .port_u16()
        .or_else(|| default_port(&scheme))
        .ok_or(Error::HttpRequestUriInvalid)?;
    // Checked before anything leaves the host: no lookup, no connection for an ungranted host.
    let grants: Vec<_> = shared
        .allowed
        .iter()
        .filter(|g| g.allows(&scheme, &host, port))
        .collect();
    if grants.is_empty() {
        return Err(Error::HttpRequestDenied);
    }

    let body = collect(body, limits.request_bytes).await?;
    shared.stats.add_bytes(body.len() as u64);
    let key = stamp.key(&parts.method, &parts.uri, &body);
    // A wildcard grant could lead anywhere (a host the plugin's author controls, say), where
    // a signed request could be taken and replayed to the real receiver: only requests to a
    // host a grant names are signed.
    let secret = shared
        .secret
        .as_deref()
        .filter(|_| grants.iter().any(|g| g.is_exact()));
    stamp_headers(secret, &mut parts.headers, &key, &body)?;
    // On the wire the request names only its path: the authority went into `Host`.
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let request = Request::from_parts(parts, Full::new(body));

    let destination = (scheme.clone(), host.clone(), port);
    // A kept-alive connection the server has closed meanwhile is passed over for the next.
    let mut idle = None;
    while let Some(mut connection) = shared.pool.take(&destination) {
        if connection.ready().await.is_ok() {
            idle = Some(connection);
            break;
        }
    }
    let mut connection = match idle {
        Some(connection) => connection,
        None => {
            let ip = |a: &SocketAddr| a.ip();
            let addresses: Vec<SocketAddr> = resolve(&host, port, limits.connect)
                .await?
                .into_iter()
                .filter(|a| is_public(ip(a)) || grants.iter().any(|g| g.names(ip(a))))
                .collect();
            if addresses.is_empty() {
                return Err(Error::DestinationIpProhibited);
            }
            let mut connection =
                connect(shared, &addresses, &scheme, &host, limits.connect).await?;
            connection.ready().await.map_err(Error::from)?;
            connection
        }
    };
    let response = tokio::time::timeout(limits.first_byte, connection.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|incoming| {
        Capped {
            incoming,
            left: limits.response_bytes,
            cap: limits.response_bytes,
            between: limits.between_bytes,
            idle: Box::pin(tokio::time::sleep(limits.between_bytes)),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            shared: shared.clone(),
            done: Some((destination, connection)),
            _permit: permit,
        }
        .boxed_unsync()
    });
    Ok(Sent { response })
}

/// The request body, whole (it is signed, and counted), or an error past `cap` bytes.
async fn collect(mut body: WasiBody, cap: u64) -> Result<Bytes, Error> {
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            let len = (whole.len() + data.len()) as u64;
            if len > cap {
                return Err(Error::HttpRequestBodySize(Some(len)));
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

/// Adds the idempotency key and, with a secret, the Standard Webhooks signature.
fn stamp_headers(
    secret: Option<&[u8]>,
    headers: &mut http::HeaderMap,
    key: &str,
    body: &[u8],
) -> Result<(), Error> {
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| Error::HttpRequestHeaderSize {
            field_name: None,
            field_size: None,
        })
    };
    headers.insert(HeaderName::from_static("idempotency-key"), value(key)?);
    headers.insert(HeaderName::from_static("webhook-id"), value(key)?);
    if let Some(secret) = secret {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = super::webhook_signature(secret, key, &timestamp.to_string(), body);
        headers.insert(
            HeaderName::from_static("webhook-timestamp"),
            value(&timestamp.to_string())?,
        );
        headers.insert(
            HeaderName::from_static("webhook-signature"),
            value(&format!("v1,{signature}"))?,
        );
    }
    Ok(())
}

/// The addresses of `host`: itself if it is an IP address, else what the resolver says.
async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| Error::DnsTimeout)?
        .map_err(|_| Error::DnsError {
            rcode: None,
            info_code: None,
        })?;
    Ok(found.collect())
}

/// A new connection to the first of `addresses` that answers.
async fn connect(
    shared: &Shared,
    addresses: &[SocketAddr],
    scheme: &str,
    host: &str,
    timeout: Duration,
) -> Result<Connection, Error> {
    let mut last = Error::ConnectionRefused;
    for address in addresses {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                last = Error::Connect(e);
                continue;
            }
            Err(_) => {
                last = Error::ConnectionTimeout;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handshake = async {
            if scheme == "https" {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let connector = tokio_rustls::TlsConnector::from(shared.tls.clone());
                let stream = connector.connect(name, stream).await.map_err(Error::Tls)?;
                handshake(stream).await
            } else {
                handshake(stream).await
            }
        };
        return tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| Error::ConnectionTimeout)?;
    }
    Err(last)
}

/// HTTP/1.1 over `stream`, its connection driven by a task of its own for as long as it lives.
async fn handshake<S>(stream: S) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    tokio::spawn(async move {
        // Its end (the server closed it, say) is seen by the sender, as `is_closed`.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A response body read with the host's bounds: at most `cap` bytes, no pause longer than
/// `between`, nothing after the deadline. Once it ends, its connection goes back to the pool.
struct Capped {
    incoming: hyper::body::Incoming,
    left: u64,
    cap: u64,
    between: Duration,
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    shared: Arc<Shared>,
    /// The connection, until the body ends and it goes back to the pool.
    done: Option<(Destination, Connection)>,
    _permit: OwnedSemaphorePermit,
}

impl Capped {
    /// The body broke off: the request counts as failed.
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.done = None;
        self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.fail(Error::HttpResponseTimeout);
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some((to, connection)) = self.done.take() {
                    self.shared.pool.put(to, connection);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => self.fail(Error::from(e)),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.left {
                        let cap = self.cap;
                        return self.fail(Error::HttpResponseBodySize(Some(cap)));
                    }
                    self.left -= len;
                    self.shared.stats.add_bytes(len);
                }
                let next = tokio::time::Instant::now() + self.between;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.idle.as_mut().poll(cx));
                self.fail(Error::ConnectionReadTimeout)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }
}
