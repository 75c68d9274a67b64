//! Count lines, words and bytes of every file under `/in` (a job's inputs), like `wc`; print a
//! line per file and a total, and write the same report to `/out/counts.txt`.

use std::io::Write;
use std::path::Path;

fn count(path: &Path, out: &mut Vec<(String, u64, u64, u64)>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            count(&e.path(), out)?;
        }
        return Ok(());
    }
    let bytes = std::fs::read(path)?;
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    let words = bytes
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .count() as u64;
    out.push((path.display().to_string(), lines, words, bytes.len() as u64));
    Ok(())
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "/in".into());
    let mut rows = Vec::new();
    if let Err(e) = count(Path::new(&root), &mut rows) {
        eprintln!("wordcount: {root}: {e}");
        std::process::exit(1);
    }
    let mut report = String::new();
    let (mut l, mut w, mut b) = (0, 0, 0);
    for (name, lines, words, bytes) in &rows {
        report.push_str(&format!("{lines:>8} {words:>8} {bytes:>10} {name}\n"));
        (l, w, b) = (l + lines, w + words, b + bytes);
    }
    report.push_str(&format!("{l:>8} {w:>8} {b:>10} total\n"));
    print!("{report}");
    let written = std::fs::File::create("/out/counts.txt").and_then(|mut f| f.write_all(report.as_bytes()));
    if let Err(e) = written {
        eprintln!("wordcount: /out/counts.txt: {e}");
        std::process::exit(1);
    }
}
