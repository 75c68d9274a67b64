//! Proofs of storage: a holder answers a challenge for a byte range of a shard with a BLAKE3
//! Merkle proof (a bao slice), which anyone who knows only the shard's name (its BLAKE3 hash)
//! can check. The auditor never needs the shard.

use std::io::{Cursor, Read};

use weft_core::ContentHash;

/// Largest range a challenge may ask for.
pub const MAX_CHALLENGE: u64 = 16 << 10;

/// Prove bytes `start..start+len` of `data` (a whole shard).
pub fn prove(data: &[u8], start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let (outboard, _) = bao::encode::outboard(data);
    let mut slice = Vec::new();
    bao::encode::SliceExtractor::new_outboard(
        Cursor::new(data),
        Cursor::new(&outboard),
        start,
        len,
    )
    .read_to_end(&mut slice)?;
    Ok(slice)
}

/// Check a proof against the shard's name; returns the proven bytes.
pub fn verify(hash: &ContentHash, start: u64, len: u64, proof: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    bao::decode::SliceDecoder::new(Cursor::new(proof), &blake3::Hash::from(hash.0), start, len)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_against_the_shard_name_and_nothing_else() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let hash = ContentHash::of(&data);
        for (start, len) in [(0, 1024), (123_456, 4096), (299_000, 5000), (0, 300_000)] {
            let proof = prove(&data, start, len).unwrap();
            let got = verify(&hash, start, len, &proof).unwrap();
            let end = (start + len).min(data.len() as u64) as usize;
            assert_eq!(got, data[start as usize..end]);
        }
        // A holder that kept only part of the shard, or altered it, cannot answer.
        let proof = prove(&data, 1000, 1024).unwrap();
        assert!(verify(&hash, 2000, 1024, &proof).is_none());
        let mut bad = data.clone();
        bad[1500] ^= 1;
        let forged = prove(&bad, 1000, 1024).unwrap();
        assert!(verify(&hash, 1000, 1024, &forged).is_none());
        let mut tampered = proof.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(verify(&hash, 1000, 1024, &tampered).is_none());
        assert!(verify(&ContentHash::of(b"other"), 1000, 1024, &proof).is_none());
    }
}
