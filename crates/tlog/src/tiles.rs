//! The [C2SP tlog-tiles](https://c2sp.org/tlog-tiles) layout: a log kept as immutable files
//! any static server can serve. A hash tile at level `L` holds up to 256 hashes of tree level
//! `8·L`; an entry bundle holds up to 256 entries, each after its length as a big-endian
//! `u16`. A tile that is not full yet is written as `<path>.p/<width>`.

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u8 = 8;
/// The largest entry a bundle can hold.
pub const MAX_ENTRY: usize = u16::MAX as usize;

/// A tile index as path elements: three digits each, all but the last prefixed with `x`
/// (`1234067` → `x001/x234/067`).
pub fn index_path(mut index: u64) -> String {
    let mut parts = vec![format!("{:03}", index % 1000)];
    index /= 1000;
    while index > 0 {
        parts.push(format!("x{:03}", index % 1000));
        index /= 1000;
    }
    parts.reverse();
    parts.join("/")
}

fn with_width(path: String, width: u64) -> String {
    if width < TILE_WIDTH {
        format!("{path}.p/{width}")
    } else {
        path
    }
}

/// The path of hash tile `index` at tile level `level`, `width` hashes wide.
pub fn tile_path(level: u8, index: u64, width: u64) -> String {
    with_width(format!("tile/{level}/{}", index_path(index)), width)
}

/// The path of entry bundle `index`, holding `width` entries.
pub fn entries_path(index: u64, width: u64) -> String {
    with_width(format!("tile/entries/{}", index_path(index)), width)
}

/// How many hashes tile `index` at tile level `level` holds in a tree of `size` leaves.
pub fn tile_width(level: u8, index: u64, size: u64) -> u64 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    let hashes = if shift >= 64 { 0 } else { size >> shift };
    hashes.saturating_sub(index * TILE_WIDTH).min(TILE_WIDTH)
}

/// Encode entries as a bundle (each at most [`MAX_ENTRY`] bytes; the caller checked).
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&(entry.len() as u16).to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

/// Decode a bundle: its entries, or `None` if it is malformed.
pub fn decode_bundle(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 || out.len() as u64 == TILE_WIDTH {
            return None;
        }
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        let rest = &bytes[2..];
        if rest.len() < len {
            return None;
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_tlog_tiles_layout() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(1_234_067), "x001/x234/067");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(tile_path(0, 1_234_067, 256), "tile/0/x001/x234/067");
        assert_eq!(tile_path(1, 0, 17), "tile/1/000.p/17");
        assert_eq!(entries_path(3, 256), "tile/entries/003");
        assert_eq!(tile_width(0, 0, 70_000), 256);
        assert_eq!(tile_width(0, 273, 70_000), 112);
        assert_eq!(tile_width(1, 1, 70_000), 17);
        assert_eq!(tile_width(2, 0, 70_000), 1);
        assert_eq!(tile_width(3, 0, 70_000), 0);
        assert_eq!(tile_width(9, 0, u64::MAX), 0);
    }

    #[test]
    fn bundles_read_back_and_malformed_ones_are_refused() {
        let entries: Vec<&[u8]> = vec![b"", b"a", &[7; 300]];
        let bytes = encode_bundle(entries.iter().copied());
        let back = decode_bundle(&bytes).unwrap();
        assert_eq!(back, entries.iter().map(|e| e.to_vec()).collect::<Vec<_>>());
        for cut in 1..bytes.len() {
            if cut == 2 || cut == 5 {
                continue; // ends exactly after an entry
            }
            assert_eq!(decode_bundle(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_bundle(&[0; 2 * 257]), None);
    }
}
