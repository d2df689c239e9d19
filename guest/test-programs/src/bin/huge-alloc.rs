//! Hostile: asks for one huge block of memory at once. Argument: MiB (default 3072).
fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map_or(3072, |a| a.parse().expect("number"));
    let block = vec![1u8; mib << 20];
    println!("allocated {} bytes", std::hint::black_box(block).len());
}
