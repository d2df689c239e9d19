//! Hostile: tries to read a host file outside its state directory.
fn main() {
    for path in ["/etc/passwd", "/state/../../etc/passwd", "../etc/passwd"] {
        match std::fs::read(path) {
            Ok(bytes) => println!("LEAKED {path}: {} bytes", bytes.len()),
            Err(e) => println!("denied {path}: {e}"),
        }
    }
}
