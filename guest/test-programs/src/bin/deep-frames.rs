//! Hostile: recurses with large stack frames, overflowing the stack the guest keeps in its own
//! linear memory before the engine's native stack.
#[allow(unconditional_recursion)]
fn deeper(n: u64) -> u64 {
    let frame = std::hint::black_box([n as u8; 16 * 1024]);
    std::hint::black_box(deeper(n + 1)) + u64::from(frame[(n % 1024) as usize])
}

fn main() {
    println!("{}", deeper(0));
}
