//! What the example jobs share.

use std::path::Path;

/// The contents of every `.csv` file under `dir`, in path order.
pub fn csv_files(dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            csv_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "csv") {
            out.push(std::fs::read_to_string(&p)?);
        }
    }
    Ok(())
}
