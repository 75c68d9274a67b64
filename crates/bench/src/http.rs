//! `weft bench http`: the three HTTP servers of a node (API, S3 gateway, OpenAI API) under idle
//! and slow clients. For each server: the latency of well-behaved requests (a fresh connection,
//! one small request, the answer's status line) alone, then again while `--idle` clients hold
//! connections open saying nothing and `--slow` clients trickle a request head a byte every
//! half second — all on loopback, bounded in count and in time (a few seconds, under the
//! servers' 10 s head timeout, so none of them is closed meanwhile). The goal: p99 under load
//! within 2× the unloaded p99.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{HttpArgs, pct, sorted, verdict};

/// Run the benchmark.
pub fn run(args: HttpArgs) -> Result<()> {
    if args.requests == 0 {
        bail!("--requests must be positive");
    }
    let limit = weft_node::MAX_HTTP_CONNECTIONS;
    if args.idle + args.slow + 16 > limit {
        bail!("--idle plus --slow must leave room under the servers' {limit} connections");
    }
    let base = crate::fresh_dir(&args.dir, "http")?;
    let result = measure(&base, &args);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn addr_in(dir: &Path, file: &str) -> Result<SocketAddr> {
    let text = std::fs::read_to_string(dir.join(file))
        .with_context(|| format!("node1 has no {file}: is that server running?"))?;
    Ok(text.trim().parse()?)
}

fn measure(base: &Path, args: &HttpArgs) -> Result<()> {
    let (fabric, _) = crate::start_with(base.join("fabric"), 1, None, true)?;
    let dir = &fabric.dirs[0];
    let token = weft_node::DataDir::open(dir)?.api_token()?;
    let servers = [
        (
            "API",
            addr_in(dir, weft_api::API_ADDR_FILE)?,
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "S3",
            addr_in(dir, weft_s3::S3_ADDR_FILE)?,
            "GET /bench HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        ),
        (
            "OpenAI",
            addr_in(dir, weft_openai::OPENAI_ADDR_FILE)?,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ];
    println!(
        "weft bench http: one node on loopback; per server {} requests alone, then with {} idle and {} slow clients",
        args.requests, args.idle, args.slow
    );
    let mut all_met = true;
    for (name, addr, request) in &servers {
        // Warm up (first connections, lazy state), then the unloaded figures.
        latencies(*addr, request, 20)?;
        let alone = sorted(latencies(*addr, request, args.requests)?);
        let pressure = Pressure::start(*addr, args.idle, args.slow)?;
        let loaded = latencies(*addr, request, args.requests);
        let held = pressure.stop();
        let loaded = sorted(loaded?);
        let (p50a, p99a) = (pct(&alone, 0.5), pct(&alone, 0.99));
        let (p50l, p99l) = (pct(&loaded, 0.5), pct(&loaded, 0.99));
        let met = p99l <= 2.0 * p99a;
        all_met &= met;
        println!(
            "{name:>6}: alone p50 {p50a:.2} ms p99 {p99a:.2} ms; with {held} idle/slow connections open p50 {p50l:.2} ms p99 {p99l:.2} ms ({:.2}x) [goal p99 <= 2x alone: {}]",
            p99l / p99a,
            verdict(met)
        );
    }
    println!("all servers: {}", verdict(all_met));
    Ok(())
}

/// `n` requests, each on a new connection: milliseconds until the status line arrived.
fn latencies(addr: SocketAddr, request: &str, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(request.as_bytes())?;
        let mut head = [0u8; 12];
        c.read_exact(&mut head)
            .context("the server did not answer a well-behaved request")?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if !head.starts_with(b"HTTP/1.1 ") {
            bail!("not an HTTP answer: {:?}", String::from_utf8_lossy(&head));
        }
    }
    Ok(out)
}

/// Idle and slow clients held open on one server.
struct Pressure {
    idle: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    trickle: std::thread::JoinHandle<Vec<TcpStream>>,
}

impl Pressure {
    fn start(addr: SocketAddr, idle: usize, slow: usize) -> Result<Pressure> {
        let idle = (0..idle)
            .map(|_| TcpStream::connect(addr))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut slow_conns = Vec::with_capacity(slow);
        for _ in 0..slow {
            let mut c = TcpStream::connect(addr)?;
            c.write_all(b"GET /v1/status HTTP/1.1\r\nHo")?;
            slow_conns.push(c);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let trickle = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if last.elapsed() >= Duration::from_millis(500) {
                    for c in &mut slow_conns {
                        let _ = c.write_all(b"o");
                    }
                    last = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            slow_conns
        });
        // Let the server take them all in before timing.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Pressure {
            idle,
            stop,
            trickle,
        })
    }

    /// Stop trickling and close everything; how many connections were held.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let slow = self.trickle.join().unwrap_or_default();
        self.idle.len() + slow.len()
    }
}
