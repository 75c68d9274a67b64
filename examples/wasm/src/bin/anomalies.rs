//! Pipeline step — anomalies: read `records.csv` files under `/in` and flag clients whose
//! request count is far above the others' (more than mean + K standard deviations; K is the
//! first argument, default 3) or whose requests mostly fail (at least 10, over half >= 400).
//! Writes `/out/anomalies.csv` (`client,requests,errors,reason`) and prints each flag.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use weft_examples::csv_files;

fn main() {
    let k: f64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 3.0,
        Some(Ok(k)) if k > 0.0 => k,
        Some(_) => {
            eprintln!("anomalies: the threshold (first argument) must be a positive number");
            std::process::exit(2);
        }
    };
    let mut texts = Vec::new();
    if let Err(e) = csv_files(Path::new("/in"), &mut texts) {
        eprintln!("anomalies: /in: {e}");
        std::process::exit(1);
    }
    let mut clients: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for text in &texts {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if let [ip, _, _, _, status, _] = f[..] {
                let c = clients.entry(ip.to_string()).or_default();
                c.0 += 1;
                c.1 += u64::from(status.parse::<u16>().unwrap_or(0) >= 400);
            }
        }
    }
    let n = clients.len().max(1) as f64;
    let mean = clients.values().map(|c| c.0 as f64).sum::<f64>() / n;
    let var = clients.values().map(|c| (c.0 as f64 - mean).powi(2)).sum::<f64>() / n;
    let limit = mean + k * var.sqrt();
    let mut out = String::from("client,requests,errors,reason\n");
    let mut flagged = 0;
    for (ip, (requests, errors)) in &clients {
        let mut reasons = Vec::new();
        if *requests as f64 > limit && clients.len() > 2 {
            reasons.push(format!("{requests} requests, above {limit:.0} (mean {mean:.1} + {k} sd)"));
        }
        if *requests >= 10 && errors * 2 > *requests {
            reasons.push(format!("{errors} of {requests} requests failed"));
        }
        if !reasons.is_empty() {
            flagged += 1;
            let reason = reasons.join("; ");
            println!("flagged {ip}: {reason}");
            out.push_str(&format!("{ip},{requests},{errors},{reason}\n"));
        }
    }
    let written = std::fs::File::create("/out/anomalies.csv").and_then(|mut f| f.write_all(out.as_bytes()));
    if let Err(e) = written {
        eprintln!("anomalies: /out/anomalies.csv: {e}");
        std::process::exit(1);
    }
    println!("{flagged} of {} clients flagged", clients.len());
}
