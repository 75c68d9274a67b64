//! Busy-works for a given number of seconds (wall clock), then writes how many rounds it did
//! to `/out/spin.txt`: a stand-in for a long job (tests kill its runner halfway through).
//!
//! `spin SECONDS [MIB]` — with MIB, it first fills that many MiB of memory (tests of the memory
//! ceiling).

use std::time::{Duration, Instant};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mib: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let hog = vec![1u8; mib << 20];
    let start = Instant::now();
    let mut rounds: u64 = 0;
    let mut x: u64 = 1;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        rounds += 1;
    }
    println!(
        "spun {rounds} rounds in {:.1} s ({x:x}) holding {} MiB",
        start.elapsed().as_secs_f64(),
        hog.iter().map(|&b| b as usize).sum::<usize>() >> 20
    );
    std::fs::write("/out/spin.txt", format!("{rounds}\n")).expect("/out is writable");
}
