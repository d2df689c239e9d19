//! Hostile: blocks in a WASI sleep (`subscribe-duration` + `block`) for a year. It burns no
//! fuel, so only the stop signal or a wall-clock limit can end it.
fn main() {
    println!("sleeping");
    std::thread::sleep(std::time::Duration::from_secs(365 * 24 * 3600));
    println!("woke up");
}
