//! Hostile: writes 1 MiB chunks into /state without end. Argument: `bytes` (default: one
//! growing file) or `entries` (empty files without end).
use std::io::Write;

fn main() {
    match std::env::args().nth(1).as_deref().unwrap_or("bytes") {
        "bytes" => {
            let mut file = std::fs::File::create("/state/fill").expect("create");
            let chunk = vec![0x5a; 1 << 20];
            let mut written = 0u64;
            loop {
                file.write_all(&chunk).expect("write");
                written += 1;
                if written.is_multiple_of(64) {
                    println!("wrote {written} MiB");
                }
            }
        }
        "entries" => {
            for i in 0u64.. {
                std::fs::File::create(format!("/state/empty-{i}")).expect("create");
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
