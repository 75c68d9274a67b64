//! `weft put`, `weft get`, `weft stat`: objects through the local node.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use weft_api::PutAnswer;
use weft_store::Manifest;

use crate::account::Actor;

/// `weft put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// File to store ("-" for standard input)
    file: PathBuf,
    /// BUCKET/KEY to store it under (without it, prints a capability instead)
    target: Option<String>,
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
    /// BUCKET/KEY, or the capability `weft put` or `weft share` printed
    capability: String,
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only bytes START-END (inclusive, as in HTTP; `START-` to the end, `-N` the last N)
    #[arg(long)]
    range: Option<String>,
    /// A kept version instead of the current one (ids from `weft ls --versions BUCKET/KEY`)
    #[arg(long, value_name = "ID")]
    version_id: Option<String>,
}

/// `weft stat`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// BUCKET/KEY, or a capability
    capability: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

fn query_escape(s: &str) -> String {
    weft_api::url_escape(s, b',')
}

pub use weft_api::path_escape;

/// A progress bar on standard error for transfers of known size, when it is a terminal.
fn progress(len: Option<u64>, verb: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        format!("{verb} {{bar:40}} {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}")
    } else {
        format!("{verb} {{spinner}} {{bytes}} {{binary_bytes_per_sec}}")
    };
    let style = indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Open the file to upload (or standard input), with a progress bar around it.
fn source(file: &std::path::Path) -> Result<Box<dyn std::io::Read>> {
    if file.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok(Box::new(progress(len, "put").wrap_read(f)))
}

/// Split `BUCKET/KEY`.
pub fn split_target(target: &str) -> Result<(&str, &str)> {
    match target.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b, k)),
        _ => anyhow::bail!("{target:?}: expected BUCKET/KEY"),
    }
}

fn is_capability(text: &str) -> bool {
    // `weft-cap1-…` names a stored object, `weft-cap2-…` carries a small one.
    let t = text.trim();
    t.starts_with("weft-cap1-") || t.starts_with("weft-cap2-")
}

/// The API path that streams `target` (a capability or BUCKET/KEY).
fn object_path(target: &str) -> Result<String> {
    if is_capability(target) {
        return Ok(format!("/v1/objects/{}", target.trim()));
    }
    let (bucket, key) = split_target(target)?;
    Ok(format!(
        "/v1/b/{}/{}",
        path_escape(bucket),
        path_escape(key)
    ))
}

/// Store a file under BUCKET/KEY, or anonymously with a printed capability.
pub fn put(who: &Actor, args: PutArgs) -> Result<()> {
    if let Some(target) = &args.target {
        if !args.regions.is_empty() || !args.jurisdictions.is_empty() || args.ec.is_some() {
            anyhow::bail!(
                "--regions, --jurisdictions and --ec belong to the bucket (`weft bucket create`), not to a put into it"
            );
        }
        let (bucket, key) = split_target(target)?;
        let api = who.client(true, &[bucket])?;
        // Ask first, so a missing or foreign bucket gets its own message rather than a
        // connection the node closed halfway through the upload.
        let _: weft_data::BucketRecord =
            api.get(&format!("/v1/buckets/{}", path_escape(bucket)))?;
        let path = format!("/v1/b/{}/{}", path_escape(bucket), path_escape(key));
        let start = Instant::now();
        let answer: PutAnswer = api.upload_put(&path, &mut source(&args.file)?)?;
        let coding = if answer.ec == PutAnswer::INLINE {
            "none: kept in its row (sealed, replicated with it)".to_string()
        } else {
            format!("erasure coding {}", answer.ec)
        };
        eprintln!(
            "stored {bucket}/{key}: {} bytes, {coding}, content id {} ({:.1} MB/s)",
            answer.size,
            &answer.content_id[..16],
            answer.size as f64 / start.elapsed().as_secs_f64().max(1e-9) / 1e6
        );
        return Ok(());
    }
    let api = who.client(true, &[])?;
    let path = format!(
        "/v1/objects?regions={}&jurisdictions={}&ec={}",
        query_escape(&args.regions),
        query_escape(&args.jurisdictions),
        query_escape(&args.ec.map(|e| e.to_string()).unwrap_or_default())
    );
    let start = Instant::now();
    let answer: PutAnswer = api.upload(&path, &mut source(&args.file)?)?;
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
pub fn get(who: &Actor, args: GetArgs) -> Result<()> {
    let api = if is_capability(&args.capability) {
        who.anonymous()?
    } else {
        who.client(false, &[split_target(&args.capability)?.0])?
    };
    let mut path = object_path(&args.capability)?;
    if let Some(v) = &args.version_id {
        if is_capability(&args.capability) {
            anyhow::bail!("--version-id needs BUCKET/KEY: a capability names one version already");
        }
        path = format!("{path}?version={}", query_escape(v));
    }
    let range = args.range.as_ref().map(|r| format!("bytes={r}"));
    let range = range.as_deref();
    let start = Instant::now();
    let bytes = match &args.output {
        Some(out) => {
            // Write beside the target and rename, so a failed read never leaves a partial file.
            let tmp = out.with_extension("weft-partial");
            let mut file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let result = {
                let mut bar = progress(None, "get").wrap_write(&mut file);
                api.download_range(&path, range, &mut bar)
            };
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
            let n = api.download_range(&path, range, &mut out)?;
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
pub fn stat(who: &Actor, args: StatArgs) -> Result<()> {
    let api = who.anonymous()?;
    let cap = if is_capability(&args.capability) {
        args.capability.trim().to_string()
    } else {
        let (bucket, key) = split_target(&args.capability)?;
        let api = who.client(false, &[bucket])?;
        // A small object kept in its row has no shards to show (sharing it would store a
        // copy just to show that).
        let listed: Vec<weft_api::ListedObject> = api.get(&format!(
            "/v1/b/{}?prefix={}",
            path_escape(bucket),
            query_escape(key)
        ))?;
        if let Some(o) = listed.iter().find(|o| o.key == key && o.inline) {
            if args.json {
                println!("{}", serde_json::to_string_pretty(o)?);
            } else {
                println!("size        {} bytes", o.size);
                println!("content id  {}", o.content_id);
                println!("kept in its row: sealed, replicated with the bucket's rows, no shards");
            }
            return Ok(());
        }
        share_capability(&api, &args.capability)?
    };
    let m: Manifest = api.get(&format!("/v1/objects/{cap}/manifest"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    // Where shards live, by site: as the account, else as this machine's node operator, else
    // by id alone.
    let nodes: Vec<weft_api::MemberStatus> = who
        .client(false, &[])
        .ok()
        .and_then(|c| c.get("/v1/nodes").ok())
        .or_else(|| {
            let dir = who.node.is_none().then(|| who.data.clone());
            dir.and_then(|d| crate::ops::client(d).ok())
                .and_then(|c| c.get("/v1/nodes").ok())
        })
        .unwrap_or_default();
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

pub(crate) fn share_capability(api: &weft_api::ApiClient, target: &str) -> Result<String> {
    let (bucket, key) = split_target(target)?;
    let v: serde_json::Value = api.get(&format!(
        "/v1/share/{}/{}",
        path_escape(bucket),
        path_escape(key)
    ))?;
    v["capability"]
        .as_str()
        .map(String::from)
        .context("the node answered without a capability")
}

/// `weft share`.
#[derive(Args, Debug)]
pub struct ShareArgs {
    /// BUCKET/KEY to share
    target: String,
}

/// Print a capability that lets anyone in the fabric read one object.
pub fn share(who: &Actor, args: ShareArgs) -> Result<()> {
    let api = who.client(false, &[split_target(&args.target)?.0])?;
    println!("{}", share_capability(&api, &args.target)?);
    eprintln!(
        "anyone holding this capability can read {} (and only it)",
        args.target
    );
    Ok(())
}

/// `weft ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// BUCKET or BUCKET/PREFIX (without it, lists buckets)
    target: Option<String>,
    /// List the kept versions of BUCKET/KEY instead, newest first
    #[arg(long)]
    versions: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// List buckets, or the objects of a bucket.
/// `weft usage`: what the account stores and the quota that applies to it.
pub fn usage(who: &Actor, json: bool) -> Result<()> {
    let api = who.client(false, &[])?;
    let u: weft_api::UsageAnswer = api.get("/v1/usage")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&u)?);
        return Ok(());
    }
    let limit = |q: Option<u64>, show: fn(u64) -> String| q.map_or("no limit".to_string(), show);
    println!("account  {}", u.account);
    println!(
        "stored   {} of {}",
        crate::ops::human_bytes(u.stored_bytes),
        limit(u.quota_bytes, crate::ops::human_bytes)
    );
    println!(
        "jobs     {}",
        limit(u.quota_jobs.map(u64::from), |j| format!(
            "at most {j} queued or running at once"
        ))
    );
    Ok(())
}

pub fn ls(who: &Actor, args: LsArgs) -> Result<()> {
    let bucket = args
        .target
        .as_deref()
        .map(|t| t.split('/').next().unwrap_or(t));
    let api = who.client(false, &bucket.into_iter().collect::<Vec<_>>())?;
    let Some(target) = args.target else {
        let buckets: Vec<weft_data::BucketRecord> = api.get("/v1/buckets")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&buckets)?);
            return Ok(());
        }
        for b in buckets {
            println!(
                "{:<24} owner {}  residency {}  coding {}",
                b.name,
                b.owner.short(),
                b.policy,
                b.ec.map_or("auto".to_string(), |e| e.to_string())
            );
        }
        return Ok(());
    };
    let rows: Vec<weft_api::ListedObject> = if args.versions {
        let (bucket, key) = split_target(&target)?;
        api.get(&format!(
            "/v1/versions/{}/{}",
            path_escape(bucket),
            path_escape(key)
        ))?
    } else {
        let (bucket, prefix) = target.split_once('/').unwrap_or((target.as_str(), ""));
        api.get(&format!(
            "/v1/b/{}?prefix={}",
            path_escape(bucket),
            query_escape(prefix).replace('/', "%2F")
        ))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if args.versions && rows.is_empty() {
        eprintln!(
            "no kept versions (the bucket keeps only the current one; `weft bucket create --versions N` keeps more)"
        );
    }
    for r in rows {
        if args.versions {
            println!("{}  {:>14}  {}", r.version, r.size, &r.content_id[..12]);
        } else {
            println!("{:>14}  {}  {}", r.size, &r.content_id[..12], r.key);
        }
    }
    Ok(())
}

/// `weft rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// BUCKET/KEY
    target: String,
}

/// Delete an object.
pub fn rm(who: &Actor, args: RmArgs) -> Result<()> {
    let (bucket, key) = split_target(&args.target)?;
    let api = who.client(true, &[bucket])?;
    api.delete(&format!(
        "/v1/b/{}/{}",
        path_escape(bucket),
        path_escape(key)
    ))?;
    println!("deleted {}", args.target);
    Ok(())
}

/// `weft bucket ...`.
#[derive(clap::Subcommand, Debug)]
pub enum BucketCommand {
    /// Create a bucket
    Create(BucketCreateArgs),
    /// List buckets
    Ls,
    /// Delete an empty bucket
    Rm {
        /// Name
        name: String,
    },
    /// Share a bucket with another account, through any node
    #[command(group(clap::ArgGroup::new("access").required(true).args(["read", "write"])))]
    Grant {
        /// Bucket
        name: String,
        /// The account: its id (`weft account show`) or the name of one on this machine
        #[arg(value_name = "ACCOUNT")]
        grantee: String,
        /// It may list and read
        #[arg(long)]
        read: bool,
        /// It may also write and delete
        #[arg(long)]
        write: bool,
    },
    /// Stop sharing a bucket with an account (refused on every node within seconds)
    Revoke {
        /// Bucket
        name: String,
        /// The account: its id or the name of one on this machine
        #[arg(value_name = "ACCOUNT")]
        grantee: String,
    },
    /// List the accounts a bucket is shared with
    Grants {
        /// Bucket
        name: String,
    },
    /// Prepay a bucket for a term: the credits leave your balance now, its storage is paid
    /// from them, and nothing it holds can be deleted or replaced until the term ends
    Prepay {
        /// Bucket (yours)
        name: String,
        /// Credits to set aside (fractions allowed)
        credits: f64,
        /// Days the term lasts
        #[arg(long)]
        days: u32,
    },
}

/// `weft bucket create`.
#[derive(Args, Debug)]
pub struct BucketCreateArgs {
    /// Name: 3 to 63 lowercase letters, digits, '-' or '.'
    name: String,
    /// Regions the bucket's data may live in, comma separated (default: anywhere)
    #[arg(long, default_value = "")]
    regions: String,
    /// Jurisdictions the bucket's data may live in, comma separated (default: any)
    #[arg(long, default_value = "")]
    jurisdictions: String,
    /// Erasure coding DATA+PARITY, e.g. 4+2 (default: chosen per write for the fabric's size)
    #[arg(long)]
    ec: Option<weft_store::Erasure>,
    /// Versions of each object to keep (1: only the current one)
    #[arg(long, default_value_t = 1)]
    versions: u32,
    /// The most a node holding its shards may charge, credits per GB-month (default: any);
    /// repair keeps to it too
    #[arg(long)]
    max_price: Option<f64>,
}

/// Bucket commands.
pub fn bucket(who: &Actor, cmd: BucketCommand) -> Result<()> {
    match cmd {
        BucketCommand::Ls => ls(
            who,
            LsArgs {
                target: None,
                versions: false,
                json: false,
            },
        ),
        BucketCommand::Rm { name } => {
            who.client(true, &[&name])?
                .delete(&format!("/v1/buckets/{}", path_escape(&name)))?;
            println!("deleted bucket {name}");
            Ok(())
        }
        BucketCommand::Grant {
            name,
            grantee,
            write,
            ..
        } => {
            let grantee = crate::account::account_id(&grantee)?;
            let owner = who.account_key()?;
            let grant = weft_data::Grant::new(&owner, &name, grantee, write, weft_net::now_ms())?;
            let _: weft_data::GrantListing = who.client(true, &[&name])?.post(
                &format!("/v1/buckets/{}/grants", path_escape(&name)),
                &grant,
            )?;
            let access = if write { "read and write" } else { "read only" };
            let put = if write {
                format!(", `weft put FILE {name}/KEY`")
            } else {
                String::new()
            };
            println!(
                "bucket {name} is shared with {} ({access}); it uses it through any node as \
                 `weft ls {name}/`, `weft get {name}/KEY`{put}",
                grantee.to_hex()
            );
            Ok(())
        }
        BucketCommand::Revoke { name, grantee } => {
            let grantee = crate::account::account_id(&grantee)?;
            who.client(true, &[&name])?.delete(&format!(
                "/v1/buckets/{}/grants/{}",
                path_escape(&name),
                grantee.to_hex()
            ))?;
            println!(
                "bucket {name} is no longer shared with {}",
                grantee.to_hex()
            );
            Ok(())
        }
        BucketCommand::Prepay {
            name,
            credits,
            days,
        } => {
            let p: weft_ledger::prepay::Prepay = who.client(true, &[&name])?.post(
                &format!("/v1/buckets/{}/prepay", path_escape(&name)),
                &weft_api::PrepayRequest { credits, days },
            )?;
            let until = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.until_ms),
            );
            println!(
                "bucket {name} prepaid: {} credits set aside until {until}; its storage is paid from them, and what it holds is kept until then",
                weft_ledger::price::credits(i128::from(p.amount))
            );
            Ok(())
        }
        BucketCommand::Grants { name } => {
            let grants: Vec<weft_data::GrantListing> = who
                .client(false, &[&name])?
                .get(&format!("/v1/buckets/{}/grants", path_escape(&name)))?;
            if grants.is_empty() {
                println!("bucket {name} is shared with no one");
            }
            for g in grants {
                println!(
                    "{}  {}",
                    g.grantee.to_hex(),
                    if g.write { "read+write" } else { "read" }
                );
            }
            Ok(())
        }
        BucketCommand::Create(a) => {
            let api = who.client(true, &[&a.name])?;
            let b: weft_data::BucketRecord = api.post(
                "/v1/buckets",
                &weft_api::CreateBucket {
                    name: a.name,
                    regions: a.regions,
                    jurisdictions: a.jurisdictions,
                    ec: a.ec.map(|e| e.to_string()).unwrap_or_default(),
                    versions: Some(a.versions),
                    max_price: a.max_price,
                },
            )?;
            let mut policy = b.policy.clone();
            policy.max_price = b.max_price;
            println!(
                "created bucket {} (residency {}, keeps {} version{}, owner {})",
                b.name,
                policy,
                b.versions,
                if b.versions == 1 { "" } else { "s" },
                b.owner.short()
            );
            Ok(())
        }
    }
}
