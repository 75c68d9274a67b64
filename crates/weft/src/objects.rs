//! `weft put`, `weft get`, `weft stat`: objects through the local node.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use weft_api::PutAnswer;
use weft_store::Manifest;

use crate::ops::client;

/// `weft put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// File to store ("-" for standard input)
    file: PathBuf,
    /// Regions the shards may live in, comma separated (default: anywhere)
    #[arg(long, default_value = "")]
    regions: String,
    /// Jurisdictions the shards may live in, comma separated (default: any)
    #[arg(long, default_value = "")]
    jurisdictions: String,
    /// Erasure coding DATA+PARITY, e.g. 4+2 (default: chosen for the fabric's size)
    #[arg(long)]
    ec: Option<weft_store::Erasure>,
}

/// `weft get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The capability `weft put` printed
    capability: String,
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// `weft stat`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// The capability `weft put` printed
    capability: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Store a file; print its capability.
pub fn put(data: Option<PathBuf>, args: PutArgs) -> Result<()> {
    let api = client(data)?;
    let path = format!(
        "/v1/objects?regions={}&jurisdictions={}&ec={}",
        query_escape(&args.regions),
        query_escape(&args.jurisdictions),
        query_escape(&args.ec.map(|e| e.to_string()).unwrap_or_default())
    );
    let start = Instant::now();
    let answer: PutAnswer = if args.file.as_os_str() == "-" {
        api.upload(&path, &mut std::io::stdin().lock())?
    } else {
        let mut file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        api.upload(&path, &mut file)?
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{}", answer.capability);
    eprintln!(
        "stored {} bytes in {} segment(s), erasure coding {}, content id {} ({:.1} MB/s)",
        answer.size,
        answer.segments,
        answer.ec,
        &answer.content_id[..16],
        answer.size as f64 / secs.max(1e-9) / 1e6
    );
    Ok(())
}

/// Read an object by capability.
pub fn get(data: Option<PathBuf>, args: GetArgs) -> Result<()> {
    let api = client(data)?;
    let path = format!("/v1/objects/{}", args.capability.trim());
    let start = Instant::now();
    let bytes = match &args.output {
        Some(out) => {
            // Write beside the target and rename, so a failed read never leaves a partial file.
            let tmp = out.with_extension("weft-partial");
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let result = api.download(&path, &mut file);
            match result {
                Ok(n) => {
                    file.sync_all()?;
                    std::fs::rename(&tmp, out)?;
                    n
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let n = api.download(&path, &mut out)?;
            out.flush()?;
            n
        }
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "read {bytes} bytes, verified ({:.1} MB/s)",
        bytes as f64 / secs.max(1e-9) / 1e6
    );
    Ok(())
}

/// Show where an object's shards live.
pub fn stat(data: Option<PathBuf>, args: StatArgs) -> Result<()> {
    let api = client(data)?;
    let m: Manifest = api.get(&format!("/v1/objects/{}/manifest", args.capability.trim()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    let nodes: Vec<weft_fabric::MemberStatus> = api.get("/v1/nodes")?;
    let site_of = |id: &weft_core::NodeId| {
        nodes
            .iter()
            .find(|n| n.id == id.to_hex())
            .map(|n| format!("{}@{}({})", id.short(), n.site, n.state.as_str()))
            .unwrap_or_else(|| format!("{}@?", id.short()))
    };
    println!("size        {} bytes", m.size);
    println!("content id  {}", m.content_id);
    println!(
        "coding      {} (any {} of {} shards rebuild a segment)",
        m.ec,
        m.ec.data,
        m.ec.total()
    );
    println!("residency   {}", m.policy);
    for seg in &m.segments {
        let holders: Vec<String> = seg.holders.iter().map(site_of).collect();
        println!(
            "segment {:>4}  {} bytes  shards on {}",
            seg.info.index,
            seg.info.plain_len,
            holders.join(" ")
        );
    }
    Ok(())
}
