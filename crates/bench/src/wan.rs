//! `weft bench wan`: every path a user waits on, across the default 3-site fabric (`weft up`:
//! eu, us, ap, two nodes each, eu–us 40 ms, eu–ap 80 ms, us–ap 60 ms one way, 1 ms inside a
//! site), each beside its physical floor — the round trip to the nodes it must reach — and the
//! ratio to it; then large transfers on the same fabric without WAN emulation, for the ratio
//! the long links cost, and boto3 (a real S3 client, `scripts/boto3-bench.py`) on that fabric:
//! 4 KiB puts and gets and GetObject of a large object.
//!
//! Everything enters at node1 (eu), as a client there would: S3 PutObject, GetObject,
//! HeadObject and ListObjectsV2 (presigned requests, one connection each) on a bucket in
//! regions eu and us, and 4 KiB puts and gets on a bucket without residency (kept in their
//! rows; also measured on loopback); a read by capability (an immutable object) through node4 (eu) and a
//! second read of an object node1 just read, through node4; a job that does nothing, submitted
//! through node1 and polled until done; an OpenAI embeddings request at node1 for a model held
//! only in ap.
//!
//! Floors: a write must reach the bucket's farthest region (so it survives a site); a read
//! must reach, for every segment, the k-th nearest holder of its shards (from the object's
//! manifest); a HEAD, a LIST, a small object's read (it lives in its row) and a job's rows
//! need two of three replicas (the nearest two nodes in the bucket's regions, the entry
//! counting as one when it is in them); a hot read
//! stays in the site; an inference request reaches the nearest node that holds the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use weft_api::{ApiClient, MemberStatus};
use weft_cluster::UpOptions;

use crate::{WanArgs, fresh_dir, pct, sorted, verdict, weft_cli};

/// One-way delays of `weft up`'s default WAN, ms.
const ONE_WAY: [(&str, &str, f64); 3] =
    [("eu", "us", 40.0), ("eu", "ap", 80.0), ("us", "ap", 60.0)];
/// One-way delay inside a site, ms.
const INTRA_SITE: f64 = 1.0;

/// Round trip between two sites of the default WAN, ms.
fn rtt(a: &str, b: &str) -> f64 {
    if a == b {
        return 2.0 * INTRA_SITE;
    }
    ONE_WAY
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map_or(f64::NAN, |(_, _, ms)| 2.0 * ms)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The S3 face of node1, as the node's own account.
struct S3 {
    bucket: Bucket,
    creds: Credentials,
}

impl S3 {
    fn put(&self, key: &str, body: &[u8]) -> Result<f64> {
        let url = self
            .bucket
            .put_object(Some(&self.creds), key)
            .sign(Duration::from_secs(600));
        let t = Instant::now();
        let resp = agent().put(url.as_str()).send(body)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !resp.status().is_success() {
            bail!("S3 PutObject {key} answered {}", resp.status());
        }
        Ok(ms)
    }

    fn get(&self, key: &str, expect: &[u8]) -> Result<f64> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(Duration::from_secs(600));
        let t = Instant::now();
        let mut resp = agent().get(url.as_str()).call()?;
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !resp.status().is_success() || body != expect {
            bail!("S3 GetObject {key}: {} or other bytes", resp.status());
        }
        Ok(ms)
    }

    fn head(&self, key: &str) -> Result<f64> {
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(Duration::from_secs(600));
        let t = Instant::now();
        let resp = agent().head(url.as_str()).call()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !resp.status().is_success() {
            bail!("S3 HeadObject {key} answered {}", resp.status());
        }
        Ok(ms)
    }

    fn list(&self, prefix: &str) -> Result<f64> {
        let mut action = self.bucket.list_objects_v2(Some(&self.creds));
        action.with_prefix(prefix);
        let url = action.sign(Duration::from_secs(600));
        let t = Instant::now();
        let mut resp = agent().get(url.as_str()).call()?;
        let _ = resp.body_mut().read_to_string()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !resp.status().is_success() {
            bail!("S3 ListObjectsV2 answered {}", resp.status());
        }
        Ok(ms)
    }
}

/// A fabric, its nodes' sites, and node1's S3 face on bucket `bench` (regions eu and us) and
/// on bucket `anywhere` (no residency: small objects live in their rows).
struct Setup {
    fabric: weft_cluster::LocalFabric,
    sites: HashMap<String, String>,
    s3: S3,
    anywhere: S3,
}

fn setup(root: PathBuf, no_wan: bool) -> Result<Setup> {
    let (fabric, _) = crate::start(
        root,
        UpOptions {
            no_wan,
            ..UpOptions::default()
        },
    )?;
    let api = &fabric.clients[0];
    let members: Vec<MemberStatus> = api.get("/v1/nodes")?;
    let sites = members
        .iter()
        .map(|m| (m.id.clone(), m.site.clone()))
        .collect();
    let _: weft_data::BucketRecord = api.post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: "bench".into(),
            regions: "eu,us".into(),
            ..Default::default()
        },
    )?;
    let _: weft_data::BucketRecord = api.post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: "anywhere".into(),
            ..Default::default()
        },
    )?;
    let (creds, endpoint) = crate::s3_access(&fabric)?;
    let s3 = S3 {
        bucket: Bucket::new(endpoint.parse()?, UrlStyle::Path, "bench", "us-east-1")?,
        creds: creds.clone(),
    };
    let anywhere = S3 {
        bucket: Bucket::new(endpoint.parse()?, UrlStyle::Path, "anywhere", "us-east-1")?,
        creds,
    };
    Ok(Setup {
        fabric,
        sites,
        s3,
        anywhere,
    })
}

/// One timed path: its latencies and its floor.
struct Row {
    name: String,
    ms: Vec<f64>,
    floor: f64,
    goal: Option<(f64, String)>,
}

impl Row {
    fn print(&self) {
        let (p50, p99) = (pct(&self.ms, 0.5), pct(&self.ms, 0.99));
        let goal = match &self.goal {
            Some((limit, text)) => format!("  [goal {text}: {}]", verdict(p50 <= *limit)),
            None => String::new(),
        };
        println!(
            "{:<34} p50 {:>8.1} ms  p99 {:>8.1} ms  floor {:>6.1} ms  p50/floor {:>6.1}{goal}",
            self.name,
            p50,
            p99,
            self.floor,
            p50 / self.floor
        );
    }
}

/// The k-th nearest holder of every segment of the object `cap`, from `site`: what a read of
/// it must reach.
fn read_floor(
    api: &ApiClient,
    cap: &str,
    sites: &HashMap<String, String>,
    site: &str,
) -> Result<f64> {
    let m: weft_store::Manifest = api.get(&format!("/v1/objects/{cap}/manifest"))?;
    let k = m.ec.data;
    let mut floor: f64 = 0.0;
    for seg in &m.segments {
        let mut rtts: Vec<f64> = seg
            .holders
            .iter()
            .filter_map(|h| sites.get(&h.to_hex()))
            .map(|s| rtt(site, s))
            .collect();
        rtts.sort_by(f64::total_cmp);
        let kth = rtts.get(k.saturating_sub(1)).copied().unwrap_or(f64::NAN);
        floor = floor.max(kth);
    }
    Ok(floor)
}

/// The site of the node `api` talks to.
fn site_of(api: &ApiClient) -> Result<String> {
    let members: Vec<MemberStatus> = api.get("/v1/nodes")?;
    members
        .into_iter()
        .find(|m| m.is_self)
        .map(|m| m.site)
        .context("a node that does not list itself")
}

/// The capability of `bench/key` (the node's own account owns the bucket).
fn capability(api: &ApiClient, key: &str) -> Result<String> {
    let v: Value = api.get(&format!("/v1/share/bench/{key}"))?;
    v["capability"]
        .as_str()
        .map(String::from)
        .context("no capability in the share answer")
}

fn read_capability(api: &ApiClient, cap: &str, expect: &[u8]) -> Result<f64> {
    let mut out = Vec::with_capacity(expect.len());
    let t = Instant::now();
    api.download(&format!("/v1/objects/{cap}"), &mut out)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if out != expect {
        bail!("a read by capability returned other bytes");
    }
    Ok(ms)
}

/// Where the project's scripts are: beside the binary's source tree, else `./scripts`.
fn scripts() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    if built.join("build-examples.sh").exists() {
        built
    } else {
        PathBuf::from("scripts")
    }
}

fn script(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
    let mut cmd = Command::new(scripts().join(name));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run scripts/{name}"))?;
    if !out.status.success() {
        bail!(
            "scripts/{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Run it.
pub fn run(args: WanArgs) -> Result<()> {
    if args.ops < 2 {
        bail!("--ops must be at least 2");
    }
    let base = fresh_dir(&args.dir, "wan")?;
    let result = measure(&base, &args);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn measure(base: &Path, args: &WanArgs) -> Result<()> {
    println!(
        "weft bench wan: weft up's default fabric (eu, us, ap; one way eu-us 40 ms, eu-ap 80 ms, \
         us-ap 60 ms, 1 ms in a site), everything entering at node1 (eu); bucket in eu and us; \
         {} runs a path",
        args.ops
    );
    let mut rows = Vec::new();
    let (lan_put, lan_get, lan_small, boto) = {
        // Without WAN first, in the same run, on a fabric of its own — alone on the machine,
        // and stopped before anything else starts.
        let lan = setup(base.join("lan"), true)?;
        let r = large(&lan.s3, args.large_mib, "lan")?;
        let small = small_s3(&lan.anywhere, args.ops, "lan-small")?;
        let boto = (args.boto3_mib > 0).then(|| {
            let s3 = &lan.anywhere;
            let endpoint = s3
                .bucket
                .base_url()
                .as_str()
                .trim_end_matches('/')
                .to_string();
            let access = (endpoint.as_str(), s3.creds.key(), s3.creds.secret());
            boto3(access, s3.bucket.name(), args.ops, args.boto3_mib)
        });
        (r.0, r.1, small, boto)
    };
    // Garage on the same machine, alone too, after weft's loopback fabric stopped.
    let garage = (!args.no_garage && args.boto3_mib > 0)
        .then(|| garage(&base.join("garage"), args.ops, args.boto3_mib));
    let wan = setup(base.join("wan"), false)?;
    let sites = &wan.sites;
    let node = |i: usize| &wan.fabric.clients[i];
    let entry = site_of(node(0))?;
    let bucket_sites = ["eu", "us"];
    let write_floor = bucket_sites
        .iter()
        .map(|s| rtt(&entry, s))
        .fold(0.0, f64::max);
    // Two of three replicas: the nearest two nodes in the bucket's regions (the entry is one).
    let mut near: Vec<f64> = sites
        .values()
        .filter(|s| bucket_sites.contains(&s.as_str()))
        .map(|s| rtt(&entry, s))
        .collect();
    near.sort_by(f64::total_cmp);
    let quorum_floor = near.get(1).copied().unwrap_or(f64::NAN);

    // Small and medium objects.
    for (size, label, n) in [
        (4usize << 10, "4 KiB", args.ops),
        (1 << 20, "1 MiB", args.ops / 2),
    ] {
        let n = n.max(2);
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        let mut floor_get: f64 = 0.0;
        for i in 0..n {
            let key = format!("{label}-{i}").replace(' ', "");
            let body = random_bytes(size, i as u64 + size as u64);
            puts.push(wan.s3.put(&key, &body)?);
            gets.push(wan.s3.get(&key, &body)?);
            if i == 0 {
                // A small object lives in its row (a quorum read of the bucket's rows); a
                // larger one in shards (the k-th nearest holder of each segment).
                floor_get = if size <= weft_data::INLINE_MAX {
                    quorum_floor
                } else {
                    let cap = capability(node(0), &key)?;
                    read_floor(node(0), &cap, sites, &entry)?
                };
            }
        }
        let goal_put =
            (size == 4 << 10).then(|| (1.25 * rtt("eu", "us"), "p50 <= 100 ms".to_string()));
        let goal_get = (size == 4 << 10).then(|| (100.0, "p50 <= 100 ms".to_string()));
        rows.push(Row {
            name: format!("{label} put (S3)"),
            ms: sorted(puts),
            floor: write_floor,
            goal: goal_put,
        });
        rows.push(Row {
            name: format!("{label} get (S3)"),
            ms: sorted(gets),
            floor: floor_get,
            goal: goal_get,
        });
    }
    // The same small objects in a bucket without residency: kept in their rows, whose
    // replicas are one per site (a majority from eu: eu and us).
    let (puts, gets) = small_s3(&wan.anywhere, args.ops.max(2), "anywhere")?;
    rows.push(Row {
        name: "4 KiB put (S3, no residency)".into(),
        ms: sorted(puts),
        floor: rtt(&entry, "us"),
        goal: Some((1.25 * rtt("eu", "us"), "p50 <= 100 ms".into())),
    });
    rows.push(Row {
        name: "4 KiB get (S3, no residency)".into(),
        ms: sorted(gets),
        floor: rtt(&entry, "us"),
        goal: Some((100.0, "p50 <= 100 ms".into())),
    });
    let mut heads = Vec::new();
    let mut lists = Vec::new();
    for i in 0..args.ops {
        heads.push(wan.s3.head(&format!("4KiB-{}", i % args.ops))?);
        lists.push(wan.s3.list("4KiB-1")?);
    }
    rows.push(Row {
        name: "HEAD (S3)".into(),
        ms: sorted(heads),
        floor: quorum_floor,
        goal: Some((100.0, "p50 <= 100 ms".into())),
    });
    rows.push(Row {
        name: "LIST by prefix (S3)".into(),
        ms: sorted(lists),
        floor: quorum_floor,
        goal: Some((100.0, "p50 <= 100 ms".into())),
    });

    // Immutable and hot reads: through node4, in node1's site.
    let body = random_bytes(1 << 20, 4242);
    wan.s3.put("hot", &body)?;
    let cap = capability(node(0), "hot")?;
    let mut immutable = Vec::new();
    let mut hot = Vec::new();
    for i in 0..args.ops.div_ceil(2) {
        immutable.push(read_capability(node(3), &cap, &body)?);
        let key = format!("hot-{i}");
        let b = random_bytes(1 << 20, 5000 + i as u64);
        wan.s3.put(&key, &b)?;
        let c = capability(node(0), &key)?;
        read_capability(node(0), &c, &b)?;
        hot.push(read_capability(node(3), &c, &b)?);
    }
    rows.push(Row {
        name: "1 MiB read by capability, node4".into(),
        floor: read_floor(node(3), &cap, sites, &site_of(node(3))?)?,
        ms: sorted(immutable),
        goal: None,
    });
    rows.push(Row {
        name: "1 MiB hot read, node4 after node1".into(),
        ms: sorted(hot),
        floor: 2.0 * INTRA_SITE,
        goal: Some((10.0, "p50 <= 10 ms".into())),
    });

    // A job that does nothing, submitted through node1 and polled until done.
    match jobs(&wan, base, args.ops.div_ceil(4).max(2)) {
        Ok(ms) => rows.push(Row {
            name: "no-op job submit -> done".into(),
            ms: sorted(ms),
            floor: quorum_floor,
            goal: Some((1000.0, "p50 <= 1 s".into())),
        }),
        Err(e) => println!("no-op job: not measured: {e:#}"),
    }
    // An embeddings request at node1 for a model held only in ap.
    match inference(&wan, base, args.ops) {
        Ok(ms) => rows.push(Row {
            name: "OpenAI embeddings, model in ap".into(),
            ms: sorted(ms),
            floor: rtt(&entry, "ap"),
            goal: None,
        }),
        Err(e) => println!("OpenAI request: not measured: {e:#}"),
    }
    for r in &rows {
        r.print();
    }
    let (wan_put, wan_get) = large(&wan.s3, args.large_mib, "wan")?;
    let ratio = |w: f64, l: f64| w / l * 100.0;
    println!(
        "{} MiB put: {:.1} MB/s with WAN, {:.1} MB/s without ({:.0}%) [goal >= 70%: {}]",
        args.large_mib,
        wan_put,
        lan_put,
        ratio(wan_put, lan_put),
        verdict(ratio(wan_put, lan_put) >= 70.0)
    );
    println!(
        "{} MiB get: {:.1} MB/s with WAN, {:.1} MB/s without ({:.0}%) [goal >= 70%: {}]",
        args.large_mib,
        wan_get,
        lan_get,
        ratio(wan_get, lan_get),
        verdict(ratio(wan_get, lan_get) >= 70.0)
    );
    let (lp, lg) = lan_small;
    println!(
        "loopback 4 KiB S3, no residency: put p50 {:.1} ms [goal <= 5 ms: {}], get p50 {:.1} ms [goal <= 2 ms: {}]",
        pct(&lp, 0.5),
        verdict(pct(&lp, 0.5) <= 5.0),
        pct(&lg, 0.5),
        verdict(pct(&lg, 0.5) <= 2.0)
    );
    let weft_big = match &boto {
        Some(Ok((_, _, big))) => Some(pct(big, 0.5)),
        _ => None,
    };
    match boto {
        Some(Ok((puts, gets, big))) => println!(
            "loopback boto3, no residency: 4 KiB put p50 {:.1} ms [goal <= 5 ms: {}], get p50 \
             {:.1} ms [goal <= 2 ms: {}]; {} MiB GetObject {:.1} MB/s (median of 3)",
            pct(&puts, 0.5),
            verdict(pct(&puts, 0.5) <= 5.0),
            pct(&gets, 0.5),
            verdict(pct(&gets, 0.5) <= 2.0),
            args.boto3_mib,
            pct(&big, 0.5)
        ),
        Some(Err(e)) => println!("loopback boto3: not measured: {e:#}"),
        None => {}
    }
    match garage {
        Some(Ok((puts, gets, big))) => {
            let ratio = weft_big.map_or(f64::NAN, |w| w / pct(&big, 0.5));
            println!(
                "loopback boto3, Garage {GARAGE_VERSION} (3 nodes, 3 copies), same run: 4 KiB put \
                 p50 {:.1} ms, get p50 {:.1} ms; {} MiB GetObject {:.1} MB/s; weft/Garage \
                 GetObject {:.2}x [goal >= 1.2x: {}]",
                pct(&puts, 0.5),
                pct(&gets, 0.5),
                args.boto3_mib,
                pct(&big, 0.5),
                ratio,
                verdict(ratio >= 1.2)
            );
        }
        Some(Err(e)) => println!("Garage: not measured: {e:#}"),
        None => {}
    }
    Ok(())
}

/// The Garage release `scripts/garage.sh` installs.
const GARAGE_VERSION: &str = "2.5.0";

/// Three Garage nodes on loopback (`scripts/garage.sh`), measured by boto3 as weft is, then
/// stopped.
fn garage(dir: &Path, ops: usize, mib: usize) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let dir_text = dir.to_string_lossy().to_string();
    let started = script("garage.sh", &["start", &dir_text], &[]);
    let result = started.and_then(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [endpoint, key, secret, bucket] = f[..] else {
            bail!("scripts/garage.sh printed {line:?}");
        };
        boto3((endpoint, key, secret), bucket, ops, mib)
    });
    let _ = script("garage.sh", &["stop", &dir_text], &[]);
    result
}

/// boto3 (installed by `scripts/s3-clients.sh`) against an S3 endpoint: 4 KiB puts and gets,
/// then GetObject of a `mib` MiB object three times (`scripts/boto3-bench.py`). Sorted put
/// ms, get ms and MB/s.
fn boto3(
    (endpoint, key, secret): (&str, &str, &str),
    bucket: &str,
    ops: usize,
    mib: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let bin = PathBuf::from(script("s3-clients.sh", &[], &[])?);
    let out = Command::new(bin.join("python"))
        .arg(scripts().join("boto3-bench.py"))
        .args([
            endpoint,
            key,
            secret,
            bucket,
            &ops.to_string(),
            &mib.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .context("cannot run scripts/boto3-bench.py")?;
    if !out.status.success() {
        bail!(
            "scripts/boto3-bench.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let list = |k: &str| -> Result<Vec<f64>> {
        let xs = v[k]
            .as_array()
            .with_context(|| format!("no {k} in boto3-bench.py's answer"))?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        Ok(sorted(xs))
    };
    Ok((list("put_ms")?, list("get_ms")?, list("big_get_mbs")?))
}

/// 4 KiB S3 puts and gets, sorted ms.
fn small_s3(s3: &S3, n: usize, prefix: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let body = random_bytes(4 << 10, 77 + i as u64);
        puts.push(s3.put(&key, &body)?);
        gets.push(s3.get(&key, &body)?);
    }
    Ok((sorted(puts), sorted(gets)))
}

/// Median put and get MB/s of `mib` MiB objects (three each).
fn large(s3: &S3, mib: usize, prefix: &str) -> Result<(f64, f64)> {
    let body = random_bytes(mib << 20, 9);
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    let mb = |ms: f64| (mib as f64 * 1048576.0) / (ms / 1000.0) / 1e6;
    for i in 0..3 {
        let key = format!("{prefix}-large-{i}");
        puts.push(mb(s3.put(&key, &body)?));
        gets.push(mb(s3.get(&key, &body)?));
    }
    Ok((pct(&sorted(puts), 0.5), pct(&sorted(gets), 0.5)))
}

/// Submit → done of a job that exits at once, through node1, `n` times; ms.
fn jobs(wan: &Setup, base: &Path, n: usize) -> Result<Vec<f64>> {
    let examples = base.join("examples");
    script(
        "build-examples.sh",
        &[],
        &[("WEFT_EXAMPLES_DIR", &examples)],
    )?;
    let spin = std::fs::read(examples.join("spin.wasm")).context("no spin.wasm built")?;
    let key = weft_core::SecretKey::from_seed(rand_seed());
    let session = weft_data::Session::new(
        &key,
        weft_core::Scope::Account,
        true,
        weft_net::now_ms(),
        3_600_000,
        &[],
    )
    .to_text();
    let api = wan.fabric.clients[0].clone().with_session(session);
    let name = format!("jobs-{}", &key.public().to_hex()[..8]);
    let _: weft_data::BucketRecord = api.post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: name.clone(),
            regions: "eu".into(),
            ..Default::default()
        },
    )?;
    let _: Value = api.upload_put(&format!("/v1/b/{name}/spin.wasm"), &mut &spin[..])?;
    let mut out = Vec::new();
    for i in 0..n {
        let spec = json!({
            "module": format!("{name}/spin.wasm"),
            "args": ["0"],
            "output": format!("{name}/out-{i}/"),
        });
        let t = Instant::now();
        let status: Value = api.post("/v1/jobs", &spec)?;
        let id = status["id"].as_str().context("no job id")?.to_string();
        let path = format!("/v1/jobs/{id}");
        loop {
            let s: Value = api.get(&path)?;
            match s["state"].as_str() {
                Some("done") => break,
                Some("failed" | "cancelled") => bail!("the no-op job ended {s}"),
                _ => {}
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("the no-op job did not finish in 120 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    seed
}

/// Embeddings requests at node1 for MiniLM held only in ap (`scripts/models.sh`), ms.
fn inference(wan: &Setup, base: &Path, n: usize) -> Result<Vec<f64>> {
    let minilm = script("models.sh", &["minilm"], &[])?;
    let config = base.join("config");
    let node1 = wan.fabric.dirs[0].to_string_lossy().to_string();
    weft_cli(&config, &["account", "create"])?;
    weft_cli(
        &config,
        &[
            "--data",
            &node1,
            "bucket",
            "create",
            "weights",
            "--regions",
            "ap",
        ],
    )?;
    weft_cli(
        &config,
        &[
            "--data",
            &node1,
            "model",
            "add",
            "minilm",
            &minilm,
            "--bucket",
            "weights",
            "--replicas",
            "1",
        ],
    )?;
    let keys = weft_cli(&config, &["--data", &node1, "key", "create"])?;
    let key = keys
        .lines()
        .find_map(|l| l.strip_prefix("export OPENAI_API_KEY="))
        .and_then(|l| l.split_whitespace().next())
        .context("no OPENAI_API_KEY line from `weft key create`")?
        .to_string();
    let addr = std::fs::read_to_string(wan.fabric.dirs[0].join(weft_openai::OPENAI_ADDR_FILE))
        .context("node1 runs no OpenAI API")?;
    let url = format!("http://{}/v1/embeddings", addr.trim());
    let ask = || -> Result<(u16, f64)> {
        let t = Instant::now();
        let mut resp = agent()
            .post(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .send_json(json!({"model": "minilm", "input": "where is my data?"}))?;
        let _ = resp.body_mut().read_to_string()?;
        Ok((resp.status().as_u16(), t.elapsed().as_secs_f64() * 1000.0))
    };
    // Until a replica is ready (the model is fetched and loaded in ap).
    let deadline = Instant::now() + Duration::from_secs(180);
    while ask()?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the model was not ready in 180 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, ms) = ask()?;
        if status != 200 {
            bail!("an embeddings request answered {status}");
        }
        out.push(ms);
    }
    Ok(out)
}
