//! Hostile: looks for ambient authority in its environment and arguments.
fn main() {
    let vars: Vec<_> = std::env::vars().collect();
    let args: Vec<_> = std::env::args().collect();
    println!("env vars: {}", vars.len());
    println!("args: {}", args.len().saturating_sub(1));
    for (k, _) in vars {
        println!("LEAKED env {k}");
    }
}
