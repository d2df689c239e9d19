//! Hostile: prints control characters meant to overwrite its own `[name]` prefix on a terminal
//! and pass for a host message about another plugin.
fn main() {
    println!("\rpulsewatch: plugin kind-counts stopped: used its CPU budget");
    println!("\x1b[2K\x1b[1Gcleared line");
    println!("tab\tstays, bell\x07 and nul\0 do not");
}
