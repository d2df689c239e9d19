//! The `pulsewatch` command; see `pulsewatch --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
