//! weft's S3-compatible gateway. Every node serves it (beside its local API): requests signed
//! with one of the node's access keys (`weft key create`) act for the node's account on its
//! buckets, so `aws s3`, rclone and boto3 work unchanged. The protocol (XML, SigV4 including
//! presigned URLs and aws-chunked bodies) is the `s3s` crate's; this crate maps its operations
//! onto [`weft_data::Acting`], scopes keys to buckets and read/write, limits body sizes and
//! request rates, and serves both path-style and virtual-host-style requests.
//!
//! It knows nothing about shards, placement or the network: those are storage's.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod auth;
mod gateway;
pub mod list;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use weft_node::Node;

/// Where the node writes the gateway's bound address (like `api.addr`).
pub const S3_ADDR_FILE: &str = "s3.addr";

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Largest object or part body accepted, in bytes (S3's own limit is 5 GiB).
    pub max_object_bytes: u64,
    /// Requests per second allowed per access key (bursts up to as many); 0: unlimited.
    pub requests_per_sec: u32,
    /// Domains under which `BUCKET.DOMAIN` names a bucket (virtual-host style); requests to
    /// any other host are path-style.
    pub domains: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_object_bytes: 5 << 30,
            requests_per_sec: 1000,
            domains: vec!["localhost".into()],
        }
    }
}

/// Runs hyper's background work (HTTP/2 streams) as tasks of the node.
#[derive(Clone)]
struct NodeExecutor(Node);

impl<F> hyper::rt::Executor<F> for NodeExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        self.0.spawn(async move {
            task.await;
        });
    }
}

/// Virtual hosts under the configured domains; everything else path-style.
struct Hosts(Vec<String>);

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        if name.is_empty() {
            return Err(s3_error!(InvalidRequest, "empty Host header"));
        }
        for domain in &self.0 {
            if let Some(bucket) = name
                .strip_suffix(domain.as_str())
                .and_then(|b| b.strip_suffix('.'))
                .filter(|b| !b.is_empty())
            {
                return Ok(VirtualHost::new(host).with_bucket(bucket));
            }
        }
        Ok(VirtualHost::new(host))
    }
}

/// Serve the gateway for `node` on `listener` until the node stops ([`Node::stopped`]), then
/// let its connections finish for up to 5 s. Every connection and body runs as a task of the
/// node ([`Node::spawn`]), so shutting the node down ends them; run this future itself with
/// [`Node::spawn_service`] so the node owns it too.
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    config: GatewayConfig,
) -> std::io::Result<()> {
    let mut builder = S3ServiceBuilder::new(gateway::Gateway {
        node: node.clone(),
        max_object_bytes: config.max_object_bytes,
    });
    builder.set_auth(auth::Keys(node.clone()));
    builder.set_access(auth::Access {
        node: node.clone(),
        limit: auth::RateLimit::new(config.requests_per_sec),
    });
    builder.set_host(Hosts(config.domains.clone()));
    let service = builder.build();
    let mut http = ConnBuilder::new(NodeExecutor(node.clone()));
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(weft_node::HTTP_HEADER_TIMEOUT);
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(64);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    node.accept_until_stopped(listener, "S3 gateway", |socket| {
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = ?e, "S3 connection ended with an error");
            }
        }
    })
    .await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_virtual_from_path_style() {
        let h = Hosts(vec!["localhost".into(), "s3.example.org".into()]);
        let b = |host: &str| {
            h.parse_host_header(host)
                .unwrap()
                .bucket()
                .map(String::from)
        };
        assert_eq!(b("photos.localhost:9000").as_deref(), Some("photos"));
        assert_eq!(b("a.b.s3.example.org").as_deref(), Some("a.b"));
        assert_eq!(b("localhost:9000"), None);
        assert_eq!(b("127.0.0.1:9000"), None);
        assert_eq!(b("other.host"), None);
        assert!(h.parse_host_header("").is_err());
    }
}
