//! `weft bench storage`: object throughput and latency through a real local fabric.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::{ApiClient, PutAnswer};

use crate::{StorageArgs, pct, sorted, verdict};

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn peak_rss_mb(dirs: &[std::path::PathBuf]) -> f64 {
    dirs.iter()
        .filter_map(|d| weft_cluster::process::running_pid(d))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .fold(0.0, f64::max)
        / 1000.0
}

fn put_bytes(api: &ApiClient, bytes: &[u8]) -> Result<String> {
    let answer: PutAnswer = api.upload("/v1/objects", &mut &bytes[..])?;
    Ok(answer.capability)
}

fn latencies(
    writer: &ApiClient,
    reader: &ApiClient,
    size: usize,
    ops: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for i in 0..ops {
        let bytes = random_bytes(size, i as u64 + 99);
        let t = Instant::now();
        let cap = put_bytes(writer, &bytes)?;
        puts.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut out = Vec::with_capacity(size);
        let t = Instant::now();
        reader.download(&format!("/v1/objects/{cap}"), &mut out)?;
        gets.push(t.elapsed().as_secs_f64() * 1000.0);
        if out != bytes {
            bail!("a {size}-byte object did not round-trip");
        }
    }
    Ok((sorted(puts), sorted(gets)))
}

fn one_run(
    base: &Path,
    args: &StorageArgs,
    wan: bool,
    input: &Path,
    input_hash: blake3::Hash,
) -> Result<()> {
    let label = if wan {
        "with emulated WAN (eu-us 40ms, eu-ap 80ms, us-ap 60ms one-way)"
    } else {
        "loopback, no WAN emulation"
    };
    let (fabric, _) = crate::start_with(
        base.join(if wan { "wan" } else { "lan" }),
        args.nodes,
        None,
        !wan,
    )?;
    println!("-- {} nodes, {label}", args.nodes);
    let (writer, reader) = (
        &fabric.clients[0],
        &fabric.clients[fabric.clients.len() - 1],
    );
    let size = std::fs::metadata(input)?.len();
    let t = Instant::now();
    let answer: PutAnswer = writer.upload("/v1/objects", &mut std::fs::File::open(input)?)?;
    let put_secs = t.elapsed().as_secs_f64();
    let mut hasher = blake3::Hasher::new();
    let t = Instant::now();
    let got = reader.download(&format!("/v1/objects/{}", answer.capability), &mut hasher)?;
    let get_secs = t.elapsed().as_secs_f64();
    if got != size || hasher.finalize() != input_hash {
        bail!("the large object did not round-trip");
    }
    let (put_mbs, get_mbs) = (size as f64 / put_secs / 1e6, size as f64 / get_secs / 1e6);
    println!(
        "{} MiB object ({}): put {:.0} MB/s [goal >= 250: {}], get {:.0} MB/s from another node [goal >= 350: {}]",
        size >> 20,
        answer.ec,
        put_mbs,
        verdict(put_mbs >= 250.0),
        get_mbs,
        verdict(get_mbs >= 350.0)
    );
    for (size, ops) in [(4 << 10, args.ops), (1 << 20, (args.ops / 3).max(5))] {
        let (puts, gets) = latencies(writer, reader, size, ops)?;
        let goal = if size == 4 << 10 && !wan {
            format!(
                "  [goal put p50 <= 5 ms: {}]",
                verdict(pct(&puts, 0.5) <= 5.0)
            )
        } else {
            String::new()
        };
        println!(
            "{:>4} KiB objects x{ops}: put p50 {:.1} ms p99 {:.1} ms; get p50 {:.1} ms p99 {:.1} ms{goal}",
            size >> 10,
            pct(&puts, 0.5),
            pct(&puts, 0.99),
            pct(&gets, 0.5),
            pct(&gets, 0.99),
        );
    }
    println!(
        "peak RSS of the busiest node: {:.0} MB",
        peak_rss_mb(&fabric.dirs)
    );
    drop(fabric);
    Ok(())
}

/// Write `mib` MiB of pseudo-random bytes to `path`; returns their BLAKE3.
pub(crate) fn write_input(path: &Path, mib: usize) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).context("cannot create the input file")?,
    );
    for i in 0..mib {
        let chunk = random_bytes(1 << 20, i as u64 + 1);
        hasher.update(&chunk);
        f.write_all(&chunk)?;
    }
    f.flush()?;
    Ok(hasher.finalize())
}

/// Run the storage benchmark.
pub fn run(args: StorageArgs) -> Result<()> {
    if args.nodes < 2 || args.large_mib == 0 {
        bail!("--nodes must be at least 2 and --large-mib positive");
    }
    let base = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("weft-bench-storage-{}", std::process::id()))
    });
    if base.exists() {
        bail!("{} already exists; give an empty --dir", base.display());
    }
    std::fs::create_dir_all(&base)?;
    let input = base.join("large.bin");
    let input_hash = write_input(&input, args.large_mib)?;
    println!(
        "weft bench storage: writes through node1's API, reads through the last node's API (real processes, QUIC, fsync)"
    );
    let result = one_run(&base, &args, false, &input, input_hash).and_then(|()| {
        if args.no_wan_run {
            Ok(())
        } else {
            one_run(&base, &args, true, &input, input_hash)
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&base);
    result
}
