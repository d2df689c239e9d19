//! Hostile: makes the host work without end in one kind of WASI call, computing next to nothing
//! itself: `random` (1 MiB of random bytes a call), `read` (reads a 1 MiB file in `/state`) or
//! `clock` (reads the clock). Prints the calls made so far, every 1,000.
fn main() {
    let call = std::env::args().nth(1).unwrap_or_else(|| "random".into());
    let path = "/state/big";
    if call == "read" {
        std::fs::write(path, vec![7u8; 1 << 20]).expect("write");
    }
    for calls in 1u64.. {
        match call.as_str() {
            "random" => drop(std::hint::black_box(
                wasip2::random::random::get_random_bytes(1 << 20),
            )),
            "read" => drop(std::hint::black_box(std::fs::read(path).expect("read"))),
            "clock" => drop(std::hint::black_box(wasip2::clocks::wall_clock::now())),
            other => panic!("unknown call {other}"),
        }
        if calls % 1000 == 0 {
            println!("calls: {calls}");
        }
    }
}
