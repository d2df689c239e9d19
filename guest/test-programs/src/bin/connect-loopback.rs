//! Hostile: tries to open a TCP connection to the host's loopback. Argument: the port.
fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "80".into());
    match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
        Ok(_) => println!("LEAKED connected to 127.0.0.1:{port}"),
        Err(e) => println!("denied 127.0.0.1:{port}: {e}"),
    }
}
