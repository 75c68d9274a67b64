//! `weft repair`: what self-healing is doing on a node.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use weft_node::HealStatus;

use crate::ops::client;

/// `weft repair ...`.
#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Repair and scrubbing figures of this node
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check the objects this node owns now and repair what they lost (instead of waiting
    /// for the next periodic check)
    Now,
    /// Re-hash every local shard now, removing corrupt ones
    Scrub,
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn print(s: &HealStatus) {
    let rate = if s.repair_secs > 0.0 {
        format!("{:.0} MB/s", mb(s.bytes_repaired) / s.repair_secs)
    } else {
        "-".into()
    };
    println!(
        "checks:     {} (last {})",
        s.scans,
        if s.last_scan_ms == 0 {
            "never".to_string()
        } else {
            format!(
                "{:.0}s ago",
                weft_net::now_ms().saturating_sub(s.last_scan_ms) as f64 / 1000.0
            )
        }
    );
    println!(
        "owned:      {} objects; {} segments degraded, {} unrepairable, {} queued",
        s.objects_owned, s.segments_degraded, s.segments_unrepairable, s.queued
    );
    println!(
        "repaired:   {} shards, {:.1} MB at {rate} (limit {:.0} MB/s), {} manifest copies, {} failures",
        s.shards_repaired,
        mb(s.bytes_repaired),
        mb(s.repair_bytes_per_sec),
        s.manifests_copied,
        s.repair_failures
    );
    println!(
        "scrubbed:   {:.1} MB, {} corrupt or missing shards dropped",
        mb(s.scrubbed_bytes),
        s.scrub_corrupt
    );
    println!(
        "reclaimed:  {} objects, {:.1} MB of garbage; {} orphan shards, {:.1} MB",
        s.gc_objects,
        mb(s.gc_bytes),
        s.orphans_removed,
        mb(s.orphan_bytes)
    );
    println!(
        "audits:     {} passed, {} failed",
        s.audits_passed, s.audits_failed
    );
    if s.unreadable_rows > 0 {
        println!(
            "left alone: {} catalog rows this node cannot read (newer weft or corrupt), e.g. {}",
            s.unreadable_rows, s.last_unreadable
        );
    }
    if s.sweeps_skipped > 0 {
        println!(
            "sweeps:     {} orphan sweeps skipped, deleting nothing; last because {}",
            s.sweeps_skipped, s.last_sweep_skip
        );
    }
    println!(
        "grace:      {:.0}s before a gone node's shards are rebuilt",
        s.grace_secs
    );
}

/// Run a repair command.
pub fn run(data: Option<PathBuf>, cmd: RepairCommand) -> Result<()> {
    let api = client(data)?;
    let status: HealStatus = match cmd {
        RepairCommand::Status { json } => {
            let s: HealStatus = api.get("/v1/repair")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            s
        }
        RepairCommand::Now => api.post("/v1/repair/check", &serde_json::json!({}))?,
        RepairCommand::Scrub => api.post("/v1/scrub", &serde_json::json!({}))?,
    };
    print(&status);
    Ok(())
}
