//! Sends one GET to the URL in its first argument, with the first-byte timeout in ms in its
//! second if given, and prints `status N, M bytes` or `error: <the host's error code>`.

use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = &args[1];
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }))
        .unwrap();
    request.set_authority(Some(authority)).unwrap();
    request
        .set_path_with_query(Some(if path.is_empty() { "/" } else { path }))
        .unwrap();
    let options = args.get(2).map(|ms| {
        let options = RequestOptions::new();
        let ns = Duration::from_millis(ms.parse().unwrap()).as_nanos() as u64;
        options.set_first_byte_timeout(Some(ns)).unwrap();
        options
    });
    let response = match outgoing_handler::handle(request, options) {
        Ok(future) => {
            future.subscribe().block();
            future.get().unwrap().unwrap()
        }
        Err(code) => Err(code),
    };
    match response {
        Err(code) => println!("error: {code:?}"),
        Ok(response) => {
            let status = response.status();
            let body = response.consume().unwrap();
            let stream = body.stream().unwrap();
            let mut bytes = 0;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => bytes += chunk.len(),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        println!("error after {bytes} bytes: {}", e.to_debug_string());
                        return;
                    }
                }
            }
            println!("status {status}, {bytes} bytes");
        }
    }
}
