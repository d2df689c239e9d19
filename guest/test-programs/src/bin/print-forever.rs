//! Hostile: prints without end, to flood the host's output and memory.
fn main() {
    let mut n = 0u64;
    loop {
        println!("flood line {n} ........................................................");
        n += 1;
    }
}
