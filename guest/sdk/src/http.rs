//! Outbound HTTP, for plugins whose host grants them destinations (`allowed_outbound_hosts` in
//! the manifest): a blocking client over `wasi:http/outgoing-handler`. The host checks every
//! request against the grants, connects itself, adds an idempotency key that is the same when
//! the plugin replays after a crash, and signs the request if it holds a secret for the plugin.
//!
//! ```no_run
//! let response = pulsewatch_guest::http::post(
//!     "https://hooks.example.com/events",
//!     &[("content-type", "application/json")],
//!     br#"{"seq":1}"#,
//! )?;
//! assert!(response.status < 300);
//! # Ok::<(), pulsewatch_guest::http::HttpError>(())
//! ```

use std::fmt;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};

/// An HTTP method (`Method::Post`, `Method::Other("PURGE".into())`, ...).
pub use wasip2::http::types::Method;
use wasip2::io::streams::StreamError;

/// The most bytes one write to a stream may carry.
const WRITE_CHUNK: usize = 4096;

/// A response: its status and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, read to its end.
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    fn of(url: &str, what: impl fmt::Display) -> Self {
        HttpError(format!("{url}: {what}"))
    }
}

/// What the host's error code means, in words.
fn said(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => {
            "refused by the host: not a destination this plugin is granted (allowed_outbound_hosts)"
                .into()
        }
        ErrorCode::DestinationIpProhibited => {
            "refused by the host: the name resolves only to private or loopback addresses, which \
             a grant must name to be reached"
                .into()
        }
        ErrorCode::ConnectionLimitReached => {
            "refused by the host: too many requests in flight at once".into()
        }
        ErrorCode::ConnectionTimeout => "the connection timed out".into(),
        ErrorCode::ConnectionReadTimeout => "no response within the host's timeout".into(),
        ErrorCode::HttpResponseTimeout => "the exchange passed the host's deadline".into(),
        ErrorCode::HttpResponseBodySize(Some(cap)) => {
            format!("the response body passed the host's cap of {cap} bytes")
        }
        ErrorCode::HttpRequestBodySize(_) => "the request body passed the host's cap".into(),
        other => format!("{other:?}"),
    }
}

/// POSTs `body` with `headers` to `url` and waits for the whole response.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, HttpError> {
    request(Method::Post, url, headers, body)
}

/// GETs `url` and waits for the whole response.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    request(Method::Get, url, headers, &[])
}

/// Sends a request and waits for the whole response. Redirects are not followed.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    start(method, url, headers, body)?.wait()
}

/// A request sent, its response not yet read: start several, then [`Pending::wait`] for each,
/// to have them in flight at once (the host allows 16 per plugin).
pub struct Pending {
    url: String,
    future: wasip2::http::types::FutureIncomingResponse,
}

/// Sends a request and returns at once; [`Pending::wait`] reads the response.
pub fn start(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Pending, HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::of(url, "not an absolute http:// or https:// URL"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(HttpError::of(url, "only http and https are supported")),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    let fields =
        Fields::from_list(&fields).map_err(|e| HttpError::of(url, format!("a header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| HttpError::of(url, format!("invalid {what}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;
    let outgoing = request.body().map_err(|()| invalid("body"))?;
    // Sent before the body is written: the host reads the body as it comes.
    let future =
        outgoing_handler::handle(request, None).map_err(|e| HttpError::of(url, said(&e)))?;
    {
        let stream = outgoing.write().map_err(|()| invalid("body"))?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::of(url, format!("cannot send the body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| HttpError::of(url, format!("cannot send the body: {}", said(&e))))?;
    Ok(Pending {
        url: url.to_owned(),
        future,
    })
}

impl Pending {
    /// Waits for the whole response.
    pub fn wait(self) -> Result<Response, HttpError> {
        let url = &self.url;
        self.future.subscribe().block();
        let response = match self.future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(HttpError::of(url, said(&code))),
            Some(Err(())) | None => return Err(HttpError::of(url, "the response was lost")),
        };
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::of(url, "invalid response"))?;
        let body = read_all(&incoming).map_err(|e| HttpError::of(url, e))?;
        drop(IncomingBody::finish(incoming));
        Ok(Response { status, body })
    }
}

fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming
        .stream()
        .map_err(|()| "the response body was taken".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!(
                    "the response body broke off: {}",
                    e.to_debug_string()
                ));
            }
        }
    }
}
