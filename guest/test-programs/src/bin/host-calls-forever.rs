//! Hostile: makes the host work without end in one kind of WASI call, computing next to nothing
//! itself: `random` (1 MiB of random bytes a call), `read` (reads a 1 MiB file in `/state`),
//! `stream` (has the host read it through a file stream, on a thread of its blocking pool, and
//! drops the stream unread) or `clock` (reads the clock). Prints the calls made so far, every
//! 1,000.
use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};

/// Has the host read the file `name` in `/state` through a stream, and drops the stream before
/// taking the bytes: wasmtime-wasi reads on a thread of its blocking pool, and the drop waits
/// for it, while the plugin's own thread does next to nothing.
fn stream_read(name: &str) {
    let (dir, _) = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/state")
        .expect("/state");
    let file = dir
        .open_at(
            PathFlags::empty(),
            name,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .expect("open");
    let stream = file.read_via_stream(0).expect("stream");
    drop(stream.read(1 << 20));
}

fn main() {
    let call = std::env::args().nth(1).unwrap_or_else(|| "random".into());
    let path = "/state/big";
    if call == "read" || call == "stream" {
        std::fs::write(path, vec![7u8; 1 << 20]).expect("write");
    }
    for calls in 1u64.. {
        match call.as_str() {
            "random" => drop(std::hint::black_box(
                wasip2::random::random::get_random_bytes(1 << 20),
            )),
            "read" => drop(std::hint::black_box(std::fs::read(path).expect("read"))),
            "stream" => stream_read("big"),
            "clock" => drop(std::hint::black_box(wasip2::clocks::wall_clock::now())),
            other => panic!("unknown call {other}"),
        }
        if calls % 1000 == 0 {
            println!("calls: {calls}");
        }
    }
}
