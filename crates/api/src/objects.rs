//! `/v1/objects`: streaming object upload and download through the node's storage.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use weft_data::{Capability, Erasure, Manifest, Residency};

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller};

/// Query of `POST /v1/objects`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PutQuery {
    /// Allowed regions, comma separated.
    #[serde(default)]
    pub regions: String,
    /// Allowed jurisdictions, comma separated.
    #[serde(default)]
    pub jurisdictions: String,
    /// Erasure coding such as `4+2` (default: chosen for the fabric's size).
    #[serde(default)]
    pub ec: String,
}

/// Answer of `POST /v1/objects`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutAnswer {
    /// The read capability.
    pub capability: String,
    /// BLAKE3 of the plaintext.
    pub content_id: String,
    /// Bytes stored.
    pub size: u64,
    /// Segments.
    pub segments: usize,
    /// Erasure coding used ([`PutAnswer::INLINE`] for an object kept in its row).
    pub ec: String,
}

impl PutAnswer {
    /// [`PutAnswer::ec`] of a small object kept in its row rather than stored in segments.
    pub const INLINE: &'static str = "inline";
}

/// A residency policy and an erasure coding, from their comma-separated query or body forms
/// (`""`: any place, the coding the fabric's size calls for).
pub(crate) fn placement(
    regions: &str,
    jurisdictions: &str,
    ec: &str,
) -> Result<(Residency, Option<Erasure>), ApiFailure> {
    let ec = match ec.trim() {
        "" => None,
        text => Some(
            text.parse::<Erasure>()
                .map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, e))?,
        ),
    };
    let policy = Residency {
        regions: list(regions),
        jurisdictions: list(jurisdictions)
            .iter()
            .map(|j| j.to_ascii_uppercase())
            .collect(),
        ..Default::default()
    };
    Ok((policy, ec))
}

pub(crate) fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(crate) async fn put(
    Caller(acting): Caller,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<Json<PutAnswer>, ApiFailure> {
    let (policy, ec) = placement(&q.regions, &q.jurisdictions, &q.ec)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    // An object stored by capability has no name that could let go of it: it is kept.
    let (cap, manifest): (Capability, Manifest) = acting
        .objects()
        .put_unnamed(reader, policy, ec)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(PutAnswer {
        capability: cap.to_text(),
        content_id: manifest.content_id.to_hex(),
        size: manifest.size,
        segments: manifest.segments.len(),
        ec: manifest.ec.to_string(),
    }))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Path(cap): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let cap = Capability::from_text(&cap).map_err(ApiFailure::from)?;
    // A read by capability alone names no account: nobody is billed for it.
    stream_object(&s, cap, &headers, None).await
}

/// Parse a single `Range: bytes=...` against an object of `size` bytes into `start..end`.
/// `Ok(None)`: no range asked; `Err(())`: unsatisfiable.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| ())?;
            let b: u64 = b.parse().map_err(|_| ())?;
            if b < a {
                return Err(());
            }
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= size || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Stream the object a capability names (or the `Range` of it asked for) as a response body.
/// Whom a read is billed to (its bytes go into a transfer receipt), and what it read.
pub(crate) type Bill = Option<(weft_core::NodeId, String)>;

pub(crate) async fn stream_object(
    s: &AppState,
    cap: Capability,
    headers: &HeaderMap,
    bill: Bill,
) -> Result<Response, ApiFailure> {
    // A small object the capability carries: opened (and verified) here, no round trip.
    if let Some(bytes) = cap.open_inline() {
        let bytes = bytes.map_err(ApiFailure::from)?;
        return Ok(ranged_body(
            &s.node,
            bytes.len() as u64,
            headers,
            bill,
            move |start, end, mut writer| async move {
                use tokio::io::AsyncWriteExt;
                writer
                    .write_all(&bytes[start as usize..end as usize])
                    .await
                    .map_err(|e| e.to_string())
            },
        ));
    }
    // Fetch the manifest first so a bad capability fails with a status, not a cut stream.
    let manifest = s
        .node
        .data()
        .manifest(&cap)
        .await
        .map_err(ApiFailure::from)?;
    let data = s.node.data().clone();
    Ok(ranged_body(
        &s.node,
        manifest.size,
        headers,
        bill,
        move |start, end, writer| async move {
            data.read_capability(&cap, &manifest, start, end, writer)
                .await
                .map_err(|e| e.to_string())
        },
    ))
}

/// A response streaming `size` bytes (or the `Range` of them asked for) that `read` writes
/// into the pipe it is given, as a task of `node` (cut short if the node shuts down); once
/// they are all written, metered to the account `bill` names.
pub(crate) fn ranged_body<F, Fut>(
    node: &weft_node::Node,
    size: u64,
    headers: &HeaderMap,
    bill: Bill,
    read: F,
) -> Response
where
    F: FnOnce(u64, u64, tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or(""));
    let (start, end, partial) = match parse_range(range, size) {
        Ok(None) => (0, size, false),
        Ok(Some((a, b))) => (a, b, true),
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let (reader, writer) = tokio::io::duplex(1 << 20);
    let reading = read(start, end, writer);
    let ledger = node.ledger().clone();
    node.spawn(async move {
        match reading.await {
            Ok(()) => {
                if let Some((account, what)) = bill {
                    ledger.meter_transfer(account, &format!("{what} {start}-{end}"), end - start);
                }
            }
            // Dropping the writer mid-stream cuts the response short; the client sees an
            // incomplete body (the length header tells it) and never a wrong byte.
            Err(e) => tracing::warn!(error = %e, "object read failed"),
        }
    });
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mut response = (
        [
            (header::CONTENT_LENGTH, (end - start).to_string()),
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = format!("bytes {start}-{}/{size}", end - 1).parse() {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

pub(crate) async fn stat(
    State(s): State<AppState>,
    Path(cap): Path<String>,
) -> Result<Json<Manifest>, ApiFailure> {
    let cap = Capability::from_text(&cap).map_err(ApiFailure::from)?;
    Ok(Json(
        s.node
            .data()
            .manifest_now(&cap)
            .await
            .map_err(ApiFailure::from)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 4))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        for bad in [
            "bytes=10-",
            "bytes=5-4",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=-0",
        ] {
            assert_eq!(parse_range(Some(bad), 10), Err(()), "{bad}");
        }
    }
}
