//! The wire encoding shared by every protocol: postcard-encoded messages in length-prefixed
//! frames, on streams that open with a protocol header.
//!
//! Decoding is total: any byte string yields a value or a [`WireError`], never a panic, and no
//! decoder allocates more than the input can justify (lengths are bounded by the frame limit).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Magic bytes that open every stream.
pub const STREAM_MAGIC: [u8; 4] = *b"WFT1";

/// Default upper bound of a single frame (1 MiB). Protocols may choose a smaller one.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// A message or frame that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Bytes that do not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame longer than the protocol allows.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A stream that does not open with weft's header.
    #[error("not a weft stream (bad magic)")]
    BadMagic,
}

/// Encode a message.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding an in-memory value into a Vec cannot fail")
}

/// Decode a message at the start of `bytes`: it and what follows it (for values that later
/// formats extend by appending).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), WireError> {
    postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Decode a message; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes after message",
            rest.len()
        )));
    }
    Ok(value)
}

/// Prefix `payload` with its length as a frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Read a frame header, refusing lengths over `max`.
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok(len)
}

/// The 7-byte header that opens a stream: magic, then the protocol number and its version.
pub fn stream_header(protocol: u16, version: u8) -> [u8; 7] {
    let p = protocol.to_be_bytes();
    [
        STREAM_MAGIC[0],
        STREAM_MAGIC[1],
        STREAM_MAGIC[2],
        STREAM_MAGIC[3],
        p[0],
        p[1],
        version,
    ]
}

/// Parse a stream header into (protocol, version).
pub fn parse_stream_header(header: [u8; 7]) -> Result<(u16, u8), WireError> {
    if header[..4] != STREAM_MAGIC {
        return Err(WireError::BadMagic);
    }
    Ok((u16::from_be_bytes([header[4], header[5]]), header[6]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_headers_round_trip() {
        let f = frame(b"abc");
        assert_eq!(frame_len(f[..4].try_into().unwrap(), 10), Ok(3));
        assert!(matches!(
            frame_len(f[..4].try_into().unwrap(), 2),
            Err(WireError::TooLarge { len: 3, max: 2 })
        ));
        assert_eq!(parse_stream_header(stream_header(7, 1)), Ok((7, 1)));
        assert_eq!(parse_stream_header([0; 7]), Err(WireError::BadMagic));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&5u32);
        assert_eq!(decode::<u32>(&bytes), Ok(5));
        bytes.push(0);
        assert!(decode::<u32>(&bytes).is_err());
    }
}

/// Structured hostile input for decoder tests: what a peer can send that random bytes rarely
/// reach — a valid message with a length or a count rewritten to something huge, or cut
/// short. Every crate's decoder tests feed their messages through [`hostile::variants`].
pub mod hostile {
    use std::time::{Duration, Instant};

    use serde::de::DeserializeOwned;

    /// Declared lengths and counts a hostile message makes: past any frame, past memory.
    pub const CLAIMS: [u64; 4] = [1 << 24, u32::MAX as u64, 1 << 40, u64::MAX];

    /// `n` as postcard writes a length or a count (LEB128).
    pub fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// `valid` with `claim` written over the byte at `at` (`replace`) or pushed in before it.
    pub fn claim_at(valid: &[u8], at: usize, claim: u64, replace: bool) -> Vec<u8> {
        let at = at.min(valid.len());
        let mut out = valid[..at].to_vec();
        out.extend(varint(claim));
        let rest = if replace {
            (at + 1).min(valid.len())
        } else {
            at
        };
        out.extend_from_slice(&valid[rest..]);
        out
    }

    /// Every hostile variant of `valid`: each of [`CLAIMS`] over and before every byte, and
    /// every prefix.
    pub fn variants(valid: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        let claimed = (0..=valid.len()).flat_map(move |at| {
            CLAIMS.iter().flat_map(move |&claim| {
                [true, false]
                    .into_iter()
                    .map(move |replace| claim_at(valid, at, claim, replace))
            })
        });
        claimed.chain((0..valid.len()).map(|n| valid[..n].to_vec()))
    }

    /// Decode every hostile variant of `valid` as `T`; the slowest decode (each must answer a
    /// value or an error, never panic, and not allocate what was merely declared).
    pub fn slowest<T: DeserializeOwned>(valid: &[u8]) -> Duration {
        variants(valid)
            .map(|bytes| {
                let t = Instant::now();
                let _ = super::decode::<T>(&bytes);
                t.elapsed()
            })
            .max()
            .unwrap_or_default()
    }
}
