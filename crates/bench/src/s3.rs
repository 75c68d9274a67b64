//! `weft bench s3`: the S3 gateway against the native API on the same local fabric.
//!
//! Both paths are one HTTP stream through node1: the native `PUT /v1/b/BUCKET/KEY` (what
//! `weft put` does) and an S3 PutObject with a SigV4-presigned URL (what any S3 client does for
//! one part); then reads of the same object both ways. Rounds alternate the two, and the
//! medians are compared.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use weft_api::{ApiClient, PutAnswer};

use crate::storage::write_input;
use crate::{S3Args, pct, sorted, verdict};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn s3_put(bucket: &Bucket, creds: &Credentials, key: &str, input: &Path) -> Result<f64> {
    let url = bucket
        .put_object(Some(creds), key)
        .sign(Duration::from_secs(600));
    let file = std::fs::File::open(input)?;
    let len = file.metadata()?.len();
    let t = Instant::now();
    let resp = agent()
        .put(url.as_str())
        .header("Content-Length", len.to_string())
        .send(ureq::SendBody::from_reader(
            &mut std::io::BufReader::with_capacity(1 << 20, file),
        ))?;
    let secs = t.elapsed().as_secs_f64();
    if !resp.status().is_success() {
        bail!("S3 PutObject answered {}", resp.status());
    }
    Ok(secs)
}

fn s3_get(
    bucket: &Bucket,
    creds: &Credentials,
    key: &str,
    expect: (u64, blake3::Hash),
) -> Result<f64> {
    let url = bucket
        .get_object(Some(creds), key)
        .sign(Duration::from_secs(600));
    let t = Instant::now();
    let resp = agent().get(url.as_str()).call()?;
    if !resp.status().is_success() {
        bail!("S3 GetObject answered {}", resp.status());
    }
    let mut hasher = blake3::Hasher::new();
    let n = std::io::copy(
        &mut resp.into_body().into_with_config().limit(u64::MAX).reader(),
        &mut hasher,
    )?;
    let secs = t.elapsed().as_secs_f64();
    if (n, hasher.finalize()) != expect {
        bail!("the object read through S3 is not the one written");
    }
    Ok(secs)
}

fn native_put(api: &ApiClient, key: &str, input: &Path) -> Result<f64> {
    let t = Instant::now();
    let _: PutAnswer = api.upload_put(
        &format!("/v1/b/bench/{key}"),
        &mut std::fs::File::open(input)?,
    )?;
    Ok(t.elapsed().as_secs_f64())
}

fn native_get(api: &ApiClient, key: &str, expect: (u64, blake3::Hash)) -> Result<f64> {
    let mut hasher = blake3::Hasher::new();
    let t = Instant::now();
    let n = api.download(&format!("/v1/b/bench/{key}"), &mut hasher)?;
    let secs = t.elapsed().as_secs_f64();
    if (n, hasher.finalize()) != expect {
        bail!("the object read through the native API is not the one written");
    }
    Ok(secs)
}

/// Run the gateway benchmark.
pub fn run(args: S3Args) -> Result<()> {
    if args.nodes < 2 || args.mib == 0 || args.rounds == 0 {
        bail!("--nodes must be at least 2, --mib and --rounds positive");
    }
    let base = crate::fresh_dir(&args.dir, "s3")?;
    let result = measure(&base, &args);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn measure(base: &Path, args: &S3Args) -> Result<()> {
    let input = base.join("object.bin");
    let hash = write_input(&input, args.mib)?;
    let expect = ((args.mib as u64) << 20, hash);
    let (fabric, _) = crate::start_with(base.join("fabric"), args.nodes, None, true)?;
    let api = &fabric.clients[0];
    let _: weft_data::BucketRecord = api.post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: "bench".into(),
            ..Default::default()
        },
    )?;
    let (creds, endpoint) = crate::s3_access(&fabric)?;
    let bucket = Bucket::new(endpoint.parse()?, UrlStyle::Path, "bench", "us-east-1")?;
    println!(
        "weft bench s3: {} nodes on loopback, {} MiB objects, {} rounds, one HTTP stream each, all through node1",
        args.nodes, args.mib, args.rounds
    );
    let (mut np, mut ng, mut sp, mut sg) = (vec![], vec![], vec![], vec![]);
    let mb = |secs: f64| (args.mib as f64 * 1048576.0) / secs / 1e6;
    for round in 0..args.rounds {
        let (nk, sk) = (format!("native-{round}"), format!("s3-{round}"));
        np.push(mb(native_put(api, &nk, &input)?));
        sp.push(mb(s3_put(&bucket, &creds, &sk, &input)?));
        ng.push(mb(native_get(api, &nk, expect)?));
        sg.push(mb(s3_get(&bucket, &creds, &sk, expect)?));
        println!(
            "round {}: put native {:.0} / s3 {:.0} MB/s; get native {:.0} / s3 {:.0} MB/s",
            round + 1,
            np[round],
            sp[round],
            ng[round],
            sg[round]
        );
    }
    let (np, ng, sp, sg) = (sorted(np), sorted(ng), sorted(sp), sorted(sg));
    let put_over = (1.0 - pct(&sp, 0.5) / pct(&np, 0.5)) * 100.0;
    let get_over = (1.0 - pct(&sg, 0.5) / pct(&ng, 0.5)) * 100.0;
    println!(
        "median put: native {:.0} MB/s, s3 {:.0} MB/s, gateway overhead {:.1}% [goal <= 15%: {}]",
        pct(&np, 0.5),
        pct(&sp, 0.5),
        put_over,
        verdict(put_over <= 15.0)
    );
    println!(
        "median get: native {:.0} MB/s, s3 {:.0} MB/s, gateway overhead {:.1}% [goal <= 15%: {}]",
        pct(&ng, 0.5),
        pct(&sg, 0.5),
        get_over,
        verdict(get_over <= 15.0)
    );
    Ok(())
}
