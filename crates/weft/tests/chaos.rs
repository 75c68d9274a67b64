//! The chaos test: a short `weft bench chaos` run (real node processes, `kill -9`, shard files
//! deleted and bit-flipped on disk, a site cut off by the WAN emulator) must end with every
//! acknowledged write intact, full redundancy back (checked on the holders' disks) and no
//! residency violation. The seed is printed; `weft bench chaos --seed N` repeats the choices.

use std::process::Command;

#[test]
fn chaos_loses_no_acknowledged_write() {
    let secs = std::env::var("WEFT_CHAOS_SECS").unwrap_or_else(|_| "45".into());
    let out = Command::new(weft_cluster::process::binary())
        .args(["bench", "chaos", "--secs", &secs, "--max-kib", "768"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "chaos failed:\n{stdout}\n{stderr}");
    let counts = stdout
        .lines()
        .find(|l| l.starts_with("checked "))
        .expect("no verification line");
    assert!(
        counts.contains(
            "lost 0, corrupted 0, shards missing 0, shards bad on disk 0, residency violations 0"
        ),
        "{counts}"
    );
    // The run did damage: something was killed and the fabric repaired or re-checked it.
    let churn = stdout
        .lines()
        .find(|l| l.starts_with("writes acknowledged"))
        .unwrap();
    assert!(!churn.starts_with("writes acknowledged 0 "), "{churn}");
    assert!(stdout.contains("PASS"), "{stdout}");
}
