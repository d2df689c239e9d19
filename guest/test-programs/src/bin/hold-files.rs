//! Hostile: opens the same file without end and keeps every handle.
fn main() {
    std::fs::write("/state/held", b"x").expect("write");
    let mut held = Vec::new();
    loop {
        held.push(std::fs::File::open("/state/held").expect("open"));
        if held.len() % 100 == 0 {
            println!("holding {} files", held.len());
        }
    }
}
