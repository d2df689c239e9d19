//! Hostile: creates timer pollables without end and keeps every one.
fn main() {
    let mut held = Vec::new();
    loop {
        held.push(wasip2::clocks::monotonic_clock::subscribe_duration(
            1_000_000_000,
        ));
        if held.len() % 100 == 0 {
            println!("holding {} pollables", held.len());
        }
    }
}
