//! Tries what a sandboxed job must not be able to do and prints one line per attempt:
//! `<what>: allowed` or `<what>: denied (<error>)`. Used by weft's sandbox tests.

fn report<T>(what: &str, r: std::io::Result<T>) {
    match r {
        Ok(_) => println!("{what}: allowed"),
        Err(e) => println!("{what}: denied ({e})"),
    }
}

fn main() {
    report("read /etc/passwd", std::fs::read("/etc/passwd"));
    report("read /in/../etc/passwd", std::fs::read("/in/../etc/passwd"));
    report("read /in/../../etc/passwd", std::fs::read("/in/../../etc/passwd"));
    report("list /", std::fs::read_dir("/"));
    report("write /in/planted", std::fs::write("/in/planted", b"x"));
    report("write /tmp/planted", std::fs::write("/tmp/planted", b"x"));
    report("connect 127.0.0.1:22", std::net::TcpStream::connect("127.0.0.1:22"));
    report("bind 127.0.0.1:0", std::net::TcpListener::bind("127.0.0.1:0"));
    report("read /in/input.txt", std::fs::read("/in/input.txt"));
    report("write /out/result.txt", std::fs::write("/out/result.txt", b"ok"));
}
