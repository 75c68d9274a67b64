//! Pipeline step — report: read `summary.csv` (from aggregate) and `anomalies.csv` (from
//! anomalies) under `/in` and write `/out/report.md`: totals, status codes, the busiest paths
//! and minutes, and the flagged clients.

use std::io::Write;
use std::path::Path;

fn find(dir: &Path, name: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out)?;
        } else if p.file_name().is_some_and(|f| f == name) {
            out.push(std::fs::read_to_string(&p)?);
        }
    }
    Ok(())
}

fn main() {
    let (mut summary, mut anomalies) = (Vec::new(), Vec::new());
    let found = find(Path::new("/in"), "summary.csv", &mut summary)
        .and_then(|_| find(Path::new("/in"), "anomalies.csv", &mut anomalies));
    if let Err(e) = found {
        eprintln!("report: /in: {e}");
        std::process::exit(1);
    }
    if summary.is_empty() {
        eprintln!("report: no summary.csv among the inputs");
        std::process::exit(1);
    }
    // kind -> (key, requests, bytes, errors)
    let mut rows: Vec<(String, String, u64, u64, u64)> = Vec::new();
    for text in &summary {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if let [kind, key, r, b, e] = f[..] {
                let n = |s: &str| s.parse::<u64>().unwrap_or(0);
                rows.push((kind.into(), key.into(), n(r), n(b), n(e)));
            }
        }
    }
    let of = |kind: &str| -> Vec<&(String, String, u64, u64, u64)> {
        let mut v: Vec<_> = rows.iter().filter(|r| r.0 == kind).collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
        v
    };
    let total: u64 = of("status").iter().map(|r| r.2).sum();
    let bytes: u64 = of("status").iter().map(|r| r.3).sum();
    let errors: u64 = of("status").iter().map(|r| r.4).sum();
    let mut md = String::from("# Access log report\n\n");
    md.push_str(&format!(
        "{total} requests, {bytes} bytes sent, {errors} errors ({:.1}%), {} clients.\n\n",
        if total > 0 { errors as f64 * 100.0 / total as f64 } else { 0.0 },
        of("client").len()
    ));
    md.push_str("## Status codes\n\n| status | requests |\n|---|---|\n");
    for r in of("status") {
        md.push_str(&format!("| {} | {} |\n", r.1, r.2));
    }
    md.push_str("\n## Busiest paths\n\n| path | requests | errors |\n|---|---|---|\n");
    for r in of("path").iter().take(5) {
        md.push_str(&format!("| {} | {} | {} |\n", r.1, r.2, r.4));
    }
    md.push_str("\n## Busiest minutes\n\n| minute | requests |\n|---|---|\n");
    for r in of("minute").iter().take(3) {
        md.push_str(&format!("| {} | {} |\n", r.1, r.2));
    }
    md.push_str("\n## Flagged clients\n\n");
    let flagged: Vec<&str> = anomalies.iter().flat_map(|t| t.lines().skip(1)).collect();
    if flagged.is_empty() {
        md.push_str("None.\n");
    }
    for line in &flagged {
        let mut f = line.splitn(4, ',');
        let (ip, r, e, why) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
        md.push_str(&format!("- {ip}: {r} requests, {e} errors — {why}\n"));
    }
    let written = std::fs::File::create("/out/report.md").and_then(|mut f| f.write_all(md.as_bytes()));
    if let Err(e) = written {
        eprintln!("report: /out/report.md: {e}");
        std::process::exit(1);
    }
    print!("{md}");
}
