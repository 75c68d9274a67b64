//! `weft bench codec`: the object codec (hash, encrypt, erasure-code) on one core.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::CodecArgs;

pub(crate) fn run(args: CodecArgs) -> Result<()> {
    use weft_store::{ObjectKey, decode_segment, encode_segment};
    if args.segment_mib == 0 || args.total_mib < args.segment_mib {
        bail!("--segment-mib must be positive and at most --total-mib");
    }
    let key = ObjectKey([0x5a; 32]);
    let segment: Vec<u8> = (0..args.segment_mib << 20)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let rounds = args.total_mib / args.segment_mib;
    let bytes = (rounds * segment.len()) as f64;
    let start = Instant::now();
    let mut last = None;
    for i in 0..rounds {
        last = Some(encode_segment(&key, i as u32, &segment, args.ec)?);
    }
    let encode = start.elapsed().as_secs_f64();
    let seg = last.context("no segment encoded")?;
    // Decode the hardest way: all parity used, as many data shards lost as there is parity.
    let lost = args.ec.parity.min(args.ec.data);
    let supplied: Vec<(usize, &[u8])> = (lost..args.ec.total())
        .map(|i| (i, seg.shards[i].as_slice()))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        decode_segment(&key, &seg.info, args.ec, &supplied)?;
    }
    let decode = start.elapsed().as_secs_f64();
    let fast: Vec<(usize, &[u8])> = (0..args.ec.data)
        .map(|i| (i, seg.shards[i].as_slice()))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        decode_segment(&key, &seg.info, args.ec, &fast)?;
    }
    let plain = start.elapsed().as_secs_f64();
    println!(
        "weft bench codec: {} MiB in {} MiB segments, {} erasure coding, one thread",
        args.total_mib, args.segment_mib, args.ec
    );
    println!(
        "encode (BLAKE3 + AES-256-GCM + RS + shard hashes): {:.0} MB/s",
        bytes / encode / 1e6
    );
    println!(
        "decode from data shards (verify + decrypt + BLAKE3):  {:.0} MB/s",
        bytes / plain / 1e6
    );
    println!(
        "decode with {lost} data shards lost (RS reconstruct):   {:.0} MB/s",
        bytes / decode / 1e6
    );
    Ok(())
}
