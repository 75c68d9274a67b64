//! Pipeline step 1 — extract: read web server access logs (common log format) from every file
//! under `/in` and write one CSV record per request to `/out/records.csv`
//! (`ip,minute,method,path,status,bytes`). Lines that do not parse are counted and skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        files(&e.path(), out)?;
    }
    Ok(())
}

/// `1.2.3.4 - - [03/Dec/2026:10:00:01 +0000] "GET /x HTTP/1.1" 200 512`
fn parse(line: &str) -> Option<String> {
    let (ip, rest) = line.split_once(' ')?;
    let time = rest.split_once('[')?.1.split_once(']')?.0;
    // Minute resolution: `03/Dec/2026:10:00`.
    let minute = time.get(..17)?;
    let request = rest.split_once('"')?.1;
    let (request, tail) = request.split_once('"')?;
    let mut parts = request.split(' ');
    let (method, path) = (parts.next()?, parts.next()?);
    let mut tail = tail.split_whitespace();
    let status: u16 = tail.next()?.parse().ok()?;
    let bytes: u64 = match tail.next()? {
        "-" => 0,
        b => b.parse().ok()?,
    };
    if ip.contains(',') || path.contains(',') || method.is_empty() {
        return None;
    }
    Some(format!("{ip},{minute},{method},{path},{status},{bytes}\n"))
}

fn main() {
    let mut inputs = Vec::new();
    if let Err(e) = files(Path::new("/in"), &mut inputs) {
        eprintln!("extract: /in: {e}");
        std::process::exit(1);
    }
    let mut csv = String::from("ip,minute,method,path,status,bytes\n");
    let (mut good, mut bad) = (0u64, 0u64);
    for path in &inputs {
        let text = match std::fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                eprintln!("extract: {}: {e}", path.display());
                std::process::exit(1);
            }
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse(line) {
                Some(record) => {
                    csv.push_str(&record);
                    good += 1;
                }
                None => bad += 1,
            }
        }
    }
    let written = std::fs::File::create("/out/records.csv").and_then(|mut f| f.write_all(csv.as_bytes()));
    if let Err(e) = written {
        eprintln!("extract: /out/records.csv: {e}");
        std::process::exit(1);
    }
    println!("{good} records from {} files; {bad} lines skipped", inputs.len());
}
