//! Faulty: panics while processing.
fn main() {
    let events = pulsewatch_guest::ChangePoller::new().poll().expect("poll");
    panic!("plugin bug after {} events", events.len());
}
