//! Pipeline step 2 — aggregate: read `records.csv` files (from the extract step) under `/in`
//! and write `/out/summary.csv`: requests, bytes and errors (status >= 400) per status code,
//! per path, per client and per minute (`kind,key,requests,bytes,errors`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use weft_examples::csv_files;

#[derive(Default)]
struct Tally {
    requests: u64,
    bytes: u64,
    errors: u64,
}

fn main() {
    let mut texts = Vec::new();
    if let Err(e) = csv_files(Path::new("/in"), &mut texts) {
        eprintln!("aggregate: /in: {e}");
        std::process::exit(1);
    }
    let mut tallies: BTreeMap<(&str, String), Tally> = BTreeMap::new();
    let mut rows = 0u64;
    for text in &texts {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let [ip, minute, _method, path, status, bytes] = f[..] else {
                eprintln!("aggregate: skipping {line:?}");
                continue;
            };
            let (Ok(code), Ok(size)) = (status.parse::<u16>(), bytes.parse::<u64>()) else {
                eprintln!("aggregate: skipping {line:?}");
                continue;
            };
            rows += 1;
            for key in [("status", status.to_string()), ("path", path.to_string()), ("client", ip.to_string()), ("minute", minute.to_string())] {
                let t = tallies.entry(key).or_default();
                t.requests += 1;
                t.bytes += size;
                t.errors += u64::from(code >= 400);
            }
        }
    }
    let mut out = String::from("kind,key,requests,bytes,errors\n");
    for ((kind, key), t) in &tallies {
        out.push_str(&format!("{kind},{key},{},{},{}\n", t.requests, t.bytes, t.errors));
    }
    let written = std::fs::File::create("/out/summary.csv").and_then(|mut f| f.write_all(out.as_bytes()));
    if let Err(e) = written {
        eprintln!("aggregate: /out/summary.csv: {e}");
        std::process::exit(1);
    }
    println!("{rows} requests aggregated into {} rows", tallies.len());
}
