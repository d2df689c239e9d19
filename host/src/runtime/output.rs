//! A plugin's stdout and stderr: split into lines, tagged with the plugin's name, capped.

use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is passed on in pieces, so a plugin that never prints a newline
/// cannot make the host buffer without bound.
const MAX_LINE: usize = 4096;

/// Which of a plugin's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
}

/// Where plugin output lines go, and the host's notices about the run.
pub trait OutputSink: Send + Sync {
    /// One line (without its newline) printed by `plugin`.
    fn line(&self, plugin: &str, stream: Stream, line: &str);

    /// Something the host has to say about the run (a reload that failed, say). Printed to
    /// stderr as `pulsewatch: ...` unless the sink says otherwise.
    fn notice(&self, text: &str) {
        // A closed stderr loses the notice, and nothing else.
        let _ = writeln!(std::io::stderr().lock(), "pulsewatch: {text}");
    }
}

/// Prints each line to the host's stdout or stderr as `[plugin] line`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Console;

impl Console {
    /// Writes `line` of `plugin` to this process's `stream` as `[plugin] line`.
    pub fn write(plugin: &str, stream: Stream, line: &str) -> std::io::Result<()> {
        match stream {
            Stream::Stdout => writeln!(std::io::stdout().lock(), "[{plugin}] {line}"),
            Stream::Stderr => writeln!(std::io::stderr().lock(), "[{plugin}] {line}"),
        }
    }
}

impl OutputSink for Console {
    fn line(&self, plugin: &str, stream: Stream, line: &str) {
        // A closed pipe (e.g. `| head`) must not stop the host; the line is dropped.
        let _ = Console::write(plugin, stream, line);
    }
}

struct State {
    partial: Vec<u8>,
    shown: usize,
    truncated: bool,
    /// Whether a line said the plugin's language runtime ran out of memory.
    out_of_memory: bool,
}

/// What language runtimes print when an allocation fails, whether the host refused to grow
/// memory or the runtime refused a request no 32-bit memory could hold: Rust ("memory
/// allocation of N bytes failed", "capacity overflow"), Python (`MemoryError`), JavaScript
/// engines ("out of memory"). Only ever used to name the reason of a plugin that then failed.
const OUT_OF_MEMORY: [&str; 4] = [
    "memory allocation of ",
    "capacity overflow",
    "MemoryError",
    "out of memory",
];

fn says_out_of_memory(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    OUT_OF_MEMORY.iter().any(|phrase| line.contains(phrase))
}

/// One output stream of one plugin, as handed to its WASI context.
#[derive(Clone)]
pub(crate) struct Capture {
    plugin: Arc<str>,
    stream: Stream,
    cap: usize,
    sink: Arc<dyn OutputSink>,
    state: Arc<Mutex<State>>,
}

impl Capture {
    pub(crate) fn new(plugin: &str, stream: Stream, cap: usize, sink: Arc<dyn OutputSink>) -> Self {
        Capture {
            plugin: plugin.into(),
            stream,
            cap,
            sink,
            state: Arc::new(Mutex::new(State {
                partial: Vec::new(),
                shown: 0,
                truncated: false,
                out_of_memory: false,
            })),
        }
    }

    fn accept(&self, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() && !state.truncated {
            let room = MAX_LINE - state.partial.len();
            let (take, newline) = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (bytes.len().min(room), false),
            };
            let (chunk, rest) = bytes.split_at(take);
            bytes = rest;
            state
                .partial
                .extend_from_slice(if newline { &chunk[..take - 1] } else { chunk });
            if newline || state.partial.len() >= MAX_LINE {
                self.emit(&mut state);
            }
        }
    }

    fn emit(&self, state: &mut State) {
        let line = std::mem::take(&mut state.partial);
        state.out_of_memory |= says_out_of_memory(&line);
        state.shown += line.len() + 1;
        if state.shown > self.cap {
            state.truncated = true;
            self.sink.line(
                &self.plugin,
                self.stream,
                &format!(
                    "... output truncated at {} bytes; the rest is discarded",
                    self.cap
                ),
            );
            return;
        }
        self.sink.line(&self.plugin, self.stream, &visible(&line));
    }

    /// Whether the plugin printed that its language runtime ran out of memory.
    pub(crate) fn said_out_of_memory(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .out_of_memory
    }

    /// Passes on a last line that had no newline.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.partial.is_empty() && !state.truncated {
            self.emit(&mut state);
        }
    }
}

/// A plugin's line as it may be shown: invalid UTF-8 replaced, and every control character but
/// tab escaped (`\r`, `\x1b`, `\u{9b}`), so that no line can move the cursor, clear the screen
/// or overwrite the `[name]` prefix that says whose it is.
fn visible(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into_owned();
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => shown.push(c),
            '\r' => shown.push_str("\\r"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                shown.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => shown.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => shown.push(c),
        }
    }
    shown
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: output past the cap is accepted and dropped, never blocks the plugin.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl OutputSink for Lines {
        fn line(&self, _: &str, _: Stream, line: &str) {
            self.0.lock().unwrap().push(line.to_owned());
        }
    }

    #[test]
    fn splits_lines_across_writes_and_flushes_the_last() {
        let lines = Arc::new(Lines::default());
        let capture = Capture::new("p", Stream::Stdout, 1 << 20, lines.clone());
        capture.accept(b"one\ntw");
        capture.accept(b"o\nthree");
        capture.finish();
        assert_eq!(*lines.0.lock().unwrap(), ["one", "two", "three"]);
    }

    #[test]
    fn control_characters_but_tab_are_escaped() {
        assert_eq!(visible(b"plain\ttext"), "plain\ttext");
        assert_eq!(
            visible(b"\rpulsewatch: plugin x stopped"),
            "\\rpulsewatch: plugin x stopped"
        );
        assert_eq!(visible(b"\x1b[2Kgone\x07\0"), "\\x1b[2Kgone\\x07\\x00");
        assert_eq!(visible("c1 \u{9b}2J".as_bytes()), "c1 \\u{9b}2J");
        assert_eq!(visible(b"bad \xff utf-8"), "bad \u{fffd} utf-8");
    }

    #[test]
    fn long_lines_are_split_and_output_is_capped() {
        let lines = Arc::new(Lines::default());
        let capture = Capture::new("p", Stream::Stdout, 3 * MAX_LINE, lines.clone());
        capture.accept(&vec![b'x'; 10 * MAX_LINE]);
        capture.finish();
        let lines = lines.0.lock().unwrap();
        assert_eq!(
            lines.len(),
            3,
            "two whole pieces, then the truncation notice"
        );
        assert_eq!(lines[0].len(), MAX_LINE);
        assert!(lines[2].contains("truncated"));
    }
}
