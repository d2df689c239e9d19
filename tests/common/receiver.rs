//! A small HTTP/1.1 server on loopback for the outbound HTTP tests: it records every request and
//! answers as the test says, with keep-alive, so that tests see what really crossed the wire.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// A pause before the answer.
    pub delay: Duration,
    /// A body that never ends.
    pub endless: bool,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            status: 200,
            delay: Duration::ZERO,
            endless: false,
        }
    }
}

type Answer = dyn Fn(&Received, usize) -> Reply + Send + Sync;

#[derive(Default)]
struct Seen {
    connections: usize,
    requests: Vec<Received>,
}

/// A running receiver; it lives as long as the test process.
pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    /// A receiver answering each request (and its index) with `answer`.
    pub fn start(answer: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let answer: Arc<Answer> = Arc::new(answer);
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                shared.lock().unwrap().connections += 1;
                let (seen, answer) = (shared.clone(), answer.clone());
                std::thread::spawn(move || serve(stream, &seen, &*answer));
            }
        });
        Receiver { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().requests.clone()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Seen>, answer: &Answer) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Received {
            method,
            path,
            headers,
            body,
        };
        let index = {
            let mut seen = seen.lock().unwrap();
            seen.requests.push(request.clone());
            seen.requests.len() - 1
        };
        let reply = answer(&request, index);
        std::thread::sleep(reply.delay);
        if reply.endless {
            let _ = write!(
                writer,
                "HTTP/1.1 {} X\r\ntransfer-encoding: chunked\r\n\r\n",
                reply.status
            );
            let chunk = vec![b'x'; 64 * 1024];
            while write!(writer, "{:x}\r\n", chunk.len()).is_ok()
                && writer.write_all(&chunk).is_ok()
                && writer.write_all(b"\r\n").is_ok()
            {}
            return;
        }
        let body = format!("status {}", reply.status);
        // One write: a response in pieces waits on the client's delayed acknowledgement.
        let response = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n\r\n{body}",
            reply.status,
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
