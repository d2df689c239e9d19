//! Faulty: exits with the status given as its argument (default 3).
fn main() {
    let code = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    std::process::exit(code);
}
