//! `weft bench list`: how long listing a large bucket takes, whole and by prefix, through a
//! node that holds none of its rows' replicas as well as through the one that wrote them.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use weft_api::{ApiClient, ListedObject, PutAnswer};

use crate::{ListArgs, fresh_dir, sorted};

/// Run it.
pub fn run(args: ListArgs) -> Result<()> {
    let base = fresh_dir(&args.dir, "weft-bench-list")?;
    let result = measure(&base, &args);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn key(i: usize) -> String {
    format!("d{:02}/obj{i:06}", i % 100)
}

fn list(api: &ApiClient, prefix: &str) -> Result<(f64, usize)> {
    let t = Instant::now();
    let rows: Vec<ListedObject> = api.get(&format!(
        "/v1/b/list?prefix={}",
        weft_api::path_escape(prefix).replace('/', "%2F")
    ))?;
    Ok((t.elapsed().as_secs_f64(), rows.len()))
}

fn measure(base: &Path, args: &ListArgs) -> Result<()> {
    let (fabric, _) = crate::start_with(base.join("fabric"), args.nodes, None, true)?;
    let writer = fabric.clients[0].clone();
    let _: weft_data::BucketRecord = writer.post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: "list".into(),
            ..Default::default()
        },
    )?;
    println!(
        "weft bench list: {} nodes on loopback, {} objects in 100 prefixes, written by {} writers through node1",
        args.nodes, args.objects, args.writers
    );
    let t = Instant::now();
    let objects = args.objects;
    let writers = args.writers.max(1);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let api = writer.clone();
                s.spawn(move || -> Result<()> {
                    for i in (w..objects).step_by(writers) {
                        let _: PutAnswer =
                            api.upload_put(&format!("/v1/b/list/{}", key(i)), &mut &b"x"[..])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "written in {secs:.1} s ({:.0} puts/s)",
        objects as f64 / secs
    );
    // The same account through another node: a read-only session of node1's own account.
    let account = weft_net::load_or_create_key(&fabric.dirs[0].join("account.key"))?;
    let session = weft_data::Session::new(
        &account,
        weft_core::Scope::Account,
        false,
        weft_net::now_ms(),
        3_600_000,
        &["list"],
    );
    let last = fabric.dirs.len() - 1;
    let addr = std::fs::read_to_string(fabric.dirs[last].join(weft_api::API_ADDR_FILE))?;
    let elsewhere = ApiClient::new(addr.trim(), "").with_session(session.to_text());
    for (name, api) in [
        ("node1 (the writer)", &fabric.clients[0]),
        ("the last node", &elsewhere),
    ] {
        let (mut whole, mut part, mut within) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let (s, n) = list(api, "")?;
            if n != objects {
                bail!("listing through {name} found {n} of {objects} objects");
            }
            whole.push(s);
            for (prefix, times) in [("d42/", &mut part), ("d42/obj001", &mut within)] {
                let (s, n) = list(api, prefix)?;
                let expected = (0..objects).filter(|i| key(*i).starts_with(prefix)).count();
                if n != expected {
                    bail!("prefix {prefix} through {name} found {n} of {expected} objects");
                }
                times.push(s);
            }
        }
        let count = |prefix: &str| (0..objects).filter(|i| key(*i).starts_with(prefix)).count();
        let (whole, part, within) = (sorted(whole), sorted(part), sorted(within));
        println!(
            "through {name}: whole bucket {:.3} s ({:.0} objects/s), prefix d42/ ({} objects) {:.1} ms, \
             prefix d42/obj001 ({} objects) {:.1} ms  (median of 3)",
            whole[1],
            objects as f64 / whole[1],
            count("d42/"),
            part[1] * 1000.0,
            count("d42/obj001"),
            within[1] * 1000.0
        );
    }
    Ok(())
}
