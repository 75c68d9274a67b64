//! The QUIC endpoint: dialing and accepting authenticated connections, and routing each stream
//! (by the protocol number in its header) and each datagram (by its first byte) to a handler.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_core::wire::{self, WireError};
use weft_core::{MembershipCert, NodeId, SecretKey};

use crate::tls::{self, MemberVerifier};
use crate::trust::{PeerInfo, Trust};
use crate::wan::{SiteMap, WanConfig, WanSocket, WanStats};

/// How long a dial may take before it is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams queued per peer while a connection to it is being dialed.
const MAX_PENDING_DATAGRAMS: usize = 64;
/// QUIC application error code sent when closing a connection for a protocol violation.
const CLOSE_PROTOCOL_VIOLATION: u32 = 1;
/// Version of the messages on every stream this build opens (the stream header carries it).
pub const WIRE_VERSION: u8 = 2;
/// Stream reset code: the stream's protocol version is not one this node speaks.
const RESET_UNKNOWN_VERSION: u32 = 426;
/// QUIC application error code sent when closing a connection to a revoked peer.
const CLOSE_REVOKED: u32 = 2;
/// QUIC application error code sent when closing a guest connection past the guests' share.
const CLOSE_BUSY: u32 = 3;

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Could not bind or configure the endpoint.
    #[error("cannot start endpoint on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer could not be reached or refused the handshake.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A stream failed.
    #[error("stream failed: {0}")]
    Stream(String),
    /// A malformed message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer did not answer in time.
    #[error("timed out")]
    Timeout,
    /// The endpoint has no WAN emulation to change.
    #[error("this endpoint was started without WAN emulation")]
    NoWan,
}

/// Who opened a stream.
#[derive(Clone, Debug)]
pub enum Peer {
    /// An authenticated fabric member.
    Member(Box<PeerInfo>),
    /// A node without a membership certificate (only for guest-accessible protocols).
    Guest(SocketAddr),
}

/// A boxed future, as stream handlers return.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Handles one incoming stream of a protocol (after its header has been read).
pub type StreamHandler =
    Arc<dyn Fn(Peer, quinn::SendStream, quinn::RecvStream) -> BoxFuture + Send + Sync>;

/// Handles one incoming datagram of a channel (the channel byte already stripped).
pub type DatagramHandler = Arc<dyn Fn(&PeerInfo, Bytes) + Send + Sync>;
/// Told the signed revocation (encoded, not yet verified) a peer closed a connection with.
pub type RevocationHandler = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// How to build an endpoint.
pub struct EndpointConfig {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// The node key.
    pub key: SecretKey,
    /// The node's membership certificate; `None` while joining (then it can only be a guest).
    pub membership: Option<MembershipCert>,
    /// The fabric trust anchor.
    pub trust: Arc<Trust>,
    /// Whether to accept guests (connections without a certificate) for guest protocols.
    pub accept_guests: bool,
    /// WAN emulation: this node's site, the links, and where peers are.
    pub wan: Option<(String, WanConfig, Arc<SiteMap>)>,
}

struct Inner {
    /// `None` once shut down, so the socket is released even while handles remain.
    quinn: RwLock<Option<quinn::Endpoint>>,
    local_addr: SocketAddr,
    client: quinn::ClientConfig,
    local: NodeId,
    trust: Arc<Trust>,
    conns: Mutex<HashMap<NodeId, (quinn::Connection, u64)>>,
    dialing: Mutex<HashMap<NodeId, Vec<Bytes>>>,
    streams: RwLock<HashMap<u16, (StreamHandler, bool)>>,
    datagrams: RwLock<HashMap<u8, DatagramHandler>>,
    /// Told the signed revocation (encoded) a peer closed a connection with.
    on_revoked: RwLock<Option<RevocationHandler>>,
    wan_stats: Arc<WanStats>,
    wan: Option<Arc<RwLock<WanConfig>>>,
    /// The node's tasks (cancelled at shutdown).
    tasks: TaskTracker,
    /// quinn's own driver tasks (never cancelled: they end once the endpoint is closed and
    /// its connections drained, and then the socket is released).
    io: TaskTracker,
    stop: CancellationToken,
    /// Connections from guests (no membership certificate) served at once.
    guests: Arc<tokio::sync::Semaphore>,
}

/// Guest connections (joiners, a CLI on another machine) an endpoint serves at once; one more
/// is closed as it arrives. Members are never counted against it.
pub const MAX_GUEST_CONNECTIONS: usize = 64;

/// quinn's tokio runtime, with its driver tasks tracked so shutdown can wait for them.
#[derive(Debug)]
struct TrackedRuntime(TaskTracker);

impl quinn::Runtime for TrackedRuntime {
    fn new_timer(&self, at: std::time::Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> std::time::Instant {
        quinn::TokioRuntime.now()
    }
}

/// Run `task` on `tasks` until it ends or `stop` is cancelled (then it is dropped).
fn spawn_owned<F>(tasks: &TaskTracker, stop: &CancellationToken, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if stop.is_cancelled() {
        return;
    }
    let stop = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {}
            _ = task => {}
        }
    });
}

/// A task run with [`Endpoint::spawn_joined`]: await it for its result (`None` if the endpoint
/// shut down before it ended); dropping it aborts the task.
pub struct Joined<T>(tokio_util::task::AbortOnDropHandle<Option<T>>);

impl<T> Future for Joined<T> {
    type Output = Option<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.ok().flatten())
    }
}

/// A node's QUIC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl Endpoint {
    /// Bind the endpoint and start accepting connections. Must run inside a tokio runtime.
    pub fn bind(cfg: EndpointConfig) -> Result<Endpoint, NetError> {
        let bind_err = |reason: String| NetError::Bind {
            addr: cfg.listen,
            reason,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert, key) = tls::make_certificate(&cfg.key, cfg.membership.as_ref())
            .map_err(|e| bind_err(e.to_string()))?;

        let verifier = Arc::new(MemberVerifier::new(
            cfg.trust.clone(),
            provider.clone(),
            cfg.accept_guests,
        ));
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bind_err(e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .map_err(|e| bind_err(e.to_string()))?;
        server_tls.alpn_protocols = vec![tls::ALPN.to_vec()];
        let client_builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bind_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut client_tls = if cfg.membership.is_some() {
            client_builder
                .with_client_auth_cert(vec![cert], key)
                .map_err(|e| bind_err(e.to_string()))?
        } else {
            client_builder.with_no_client_auth()
        };
        client_tls.alpn_protocols = vec![tls::ALPN.to_vec()];

        let transport = Arc::new(transport_config());
        let quic_server = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| bind_err(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
        server.transport_config(transport.clone());
        let quic_client = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| bind_err(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic_client));
        client.transport_config(transport);

        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(|e| bind_err(e.to_string()))?;
        let local_addr = socket.local_addr().map_err(|e| bind_err(e.to_string()))?;
        size_buffers(&socket);
        let (tasks, io, stop) = (
            TaskTracker::new(),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(TrackedRuntime(io.clone()));
        let wan_stats = Arc::new(WanStats::default());
        // Stateless-reset tokens derived from the node key: when a node restarts, peers still
        // holding a connection to its previous run get a reset at once instead of waiting for
        // the idle timeout.
        let mut material = b"weft stateless reset v1\0".to_vec();
        material.extend_from_slice(&cfg.key.seed());
        let reset_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            ring::digest::digest(&ring::digest::SHA256, &material).as_ref(),
        );
        let endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        // With emulation configured (even as all-zero links) the socket is wrapped, so links
        // can be changed while running (`set_wan`): that is how tests cut a site off.
        let mut wan_handle = None;
        let quinn = match cfg.wan {
            Some((site, wan, sites)) => {
                let plain = runtime
                    .wrap_udp_socket(socket)
                    .map_err(|e| bind_err(e.to_string()))?;
                let shared = Arc::new(RwLock::new(wan));
                wan_handle = Some(shared.clone());
                let (emulated, delay_queue) =
                    WanSocket::new(plain, site, shared, sites, wan_stats.clone());
                spawn_owned(&tasks, &stop, delay_queue);
                quinn::Endpoint::new_with_abstract_socket(
                    endpoint_config,
                    Some(server),
                    Arc::new(emulated),
                    runtime,
                )
            }
            None => quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime),
        }
        .map_err(|e| bind_err(e.to_string()))?;

        let endpoint = Endpoint {
            inner: Arc::new(Inner {
                quinn: RwLock::new(Some(quinn)),
                local_addr,
                client,
                local: cfg.key.public(),
                trust: cfg.trust,
                conns: Mutex::new(HashMap::new()),
                dialing: Mutex::new(HashMap::new()),
                streams: RwLock::new(HashMap::new()),
                datagrams: RwLock::new(HashMap::new()),
                on_revoked: RwLock::new(None),
                wan_stats,
                wan: wan_handle,
                tasks,
                io,
                stop,
                guests: Arc::new(tokio::sync::Semaphore::new(MAX_GUEST_CONNECTIONS)),
            }),
        };
        endpoint.spawn(endpoint.clone().accept_loop());
        Ok(endpoint)
    }

    /// Run `task` as part of this node: it ends (is dropped at its next await point) when the
    /// endpoint shuts down, and [`Endpoint::shutdown`] waits for it. Every long-lived task of
    /// every service runs through here, so stopping a node stops all of it. After shutdown has
    /// begun, `task` is dropped without running.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn_owned(&self.inner.tasks, &self.inner.stop, task);
    }

    /// Run `task` as part of this node and hand back its result: like [`Endpoint::spawn`], but
    /// the handle aborts the task when it is dropped (a reader that went away stops its
    /// prefetches), and yields `None` if the endpoint shut down first.
    pub fn spawn_joined<F>(&self, task: F) -> Joined<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let stop = self.inner.stop.clone();
        let handle = self.inner.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                out = task => Some(out),
            }
        });
        Joined(tokio_util::task::AbortOnDropHandle::new(handle))
    }

    /// Whether [`Endpoint::shutdown`] has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Resolves once [`Endpoint::shutdown`] has begun (e.g. a server's graceful-shutdown signal).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.stop.clone().cancelled_owned()
    }

    /// Tasks of this endpoint still alive: those run through [`Endpoint::spawn`] (and by the
    /// endpoint itself: accepting, per-connection and per-stream loops, dials, WAN emulation)
    /// plus quinn's drivers. Zero once [`Endpoint::shutdown`] has returned.
    pub fn live_tasks(&self) -> usize {
        self.inner.tasks.len() + self.inner.io.len()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.local
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.inner.local_addr)
    }

    /// The trust anchor and revocation list.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.inner.trust
    }

    /// Datagrams (delayed, dropped) by WAN emulation so far.
    pub fn wan_counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.wan_stats.delayed.load(Relaxed),
            self.inner.wan_stats.dropped.load(Relaxed),
        )
    }

    /// Replace the emulated links (e.g. 100% loss to cut a site off, then the old links to heal
    /// it). Only for endpoints bound with WAN emulation.
    pub fn set_wan(&self, config: WanConfig) -> Result<(), NetError> {
        let handle = self.inner.wan.as_ref().ok_or(NetError::NoWan)?;
        *handle.write() = config;
        Ok(())
    }

    /// The emulated links in force, if emulation is on.
    pub fn wan(&self) -> Option<WanConfig> {
        self.inner.wan.as_ref().map(|w| w.read().clone())
    }

    /// Route streams of `protocol` to `handler`. `guests` lets nodes without a certificate use it.
    pub fn register_stream(&self, protocol: u16, guests: bool, handler: StreamHandler) {
        if self.is_stopping() {
            return;
        }
        self.inner
            .streams
            .write()
            .insert(protocol, (handler, guests));
    }

    /// Route datagrams of `channel` (members only) to `handler`.
    pub fn register_datagram(&self, channel: u8, handler: DatagramHandler) {
        if self.is_stopping() {
            return;
        }
        self.inner.datagrams.write().insert(channel, handler);
    }

    /// Call `handler` with the signed revocation (encoded, unverified) whenever a peer closes a
    /// connection saying this node was revoked.
    pub fn on_revoked(&self, handler: RevocationHandler) {
        *self.inner.on_revoked.write() = Some(handler);
    }

    /// Dial `addr`; the peer must be a member (and `expect`, if given).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expect: Option<NodeId>,
    ) -> Result<(quinn::Connection, PeerInfo), NetError> {
        let err = |reason: String| NetError::Connect { addr, reason };
        let quinn = self
            .quinn()
            .ok_or_else(|| err("the endpoint is shut down".into()))?;
        let connecting = quinn
            .connect_with(self.inner.client.clone(), addr, tls::SERVER_NAME)
            .map_err(|e| err(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| err("handshake timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let peer = tls::connection_peer(&conn)
            .ok_or_else(|| err("peer presented no membership certificate".into()))?;
        if let Some(expected) = expect
            && expected != peer.id
        {
            conn.close(CLOSE_PROTOCOL_VIOLATION.into(), b"unexpected node");
            return Err(err(format!("expected node {expected}, found {}", peer.id)));
        }
        if peer.id == self.inner.local {
            conn.close(CLOSE_PROTOCOL_VIOLATION.into(), b"self");
            return Err(err("that address is this node".into()));
        }
        if self.inner.trust.is_revoked(&peer.id) {
            self.refuse_if_revoked(&conn, &Peer::Member(Box::new(peer.clone())));
            return Err(err(format!("node {} is revoked", peer.id.short())));
        }
        self.adopt(conn.clone(), Peer::Member(Box::new(peer.clone())));
        Ok((conn, peer))
    }

    /// A live connection to `id` at `addr`, dialing if needed.
    pub async fn connection(
        &self,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, NetError> {
        if let Some(conn) = self.cached(&id) {
            return Ok(conn);
        }
        Ok(self.connect(addr, Some(id)).await?.0)
    }

    /// Open a stream of `protocol` to `id` at `addr`.
    pub async fn open(
        &self,
        id: NodeId,
        addr: SocketAddr,
        protocol: u16,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), NetError> {
        let conn = self.connection(id, addr).await?;
        open_on(&conn, protocol).await
    }

    /// Send a datagram on `channel` to `id` at `addr`: unreliable, never blocks. If no connection
    /// exists one is dialed in the background and the datagram sent when it is up.
    pub fn send_datagram(&self, id: NodeId, addr: SocketAddr, channel: u8, payload: &[u8]) {
        if self.is_stopping() {
            return;
        }
        let mut buf = Vec::with_capacity(payload.len() + 1);
        buf.push(channel);
        buf.extend_from_slice(payload);
        let buf = Bytes::from(buf);
        if let Some(conn) = self.cached(&id) {
            let _ = conn.send_datagram(buf);
            return;
        }
        let mut dialing = self.inner.dialing.lock();
        if let Some(pending) = dialing.get_mut(&id) {
            if pending.len() < MAX_PENDING_DATAGRAMS {
                pending.push(buf);
            }
            return;
        }
        dialing.insert(id, vec![buf]);
        drop(dialing);
        let this = self.clone();
        self.spawn(async move {
            let result = this.connect(addr, Some(id)).await;
            let pending = this.inner.dialing.lock().remove(&id).unwrap_or_default();
            match result {
                Ok((conn, _)) => {
                    for d in pending {
                        let _ = conn.send_datagram(d);
                    }
                }
                Err(e) => tracing::debug!(peer = %id, %addr, error = %e, "dial failed"),
            }
        });
    }

    /// The smoothed RTT of the current connection to `id`, if any.
    pub fn rtt(&self, id: &NodeId) -> Option<Duration> {
        self.cached(id).map(|c| c.rtt())
    }

    /// Close any connection to `id` (used when it is revoked).
    pub fn disconnect(&self, id: &NodeId) {
        let conn = self.inner.conns.lock().remove(id);
        if let Some((conn, _)) = conn {
            let doc = self.inner.trust.revocation_of(id).unwrap_or_default();
            let reason: &[u8] = if doc.is_empty() { b"revoked" } else { &doc };
            conn.close(CLOSE_REVOKED.into(), reason);
        }
    }

    /// Forget the cached connection to `id` if it was established before `since_ms` (Unix ms):
    /// used when a peer is known to have restarted at `since_ms`, so a connection to its
    /// previous run is not used until it idles out.
    pub fn forget_if_older(&self, id: &NodeId, since_ms: u64) {
        let mut conns = self.inner.conns.lock();
        if conns.get(id).is_some_and(|(_, at)| *at < since_ms)
            && let Some((conn, _)) = conns.remove(id)
        {
            conn.close(0u32.into(), b"peer restarted");
        }
    }

    /// Stop the endpoint: close it (telling peers) and wait briefly for that to be sent, cancel
    /// every task run through [`Endpoint::spawn`] and wait for them, drop the protocol handlers
    /// (which hold the services' state, and through it this endpoint) and the connections, and
    /// wait for quinn to release the socket. Afterwards dials fail and nothing is served.
    pub async fn shutdown(&self) {
        let quinn = self.inner.quinn.write().take();
        if let Some(quinn) = &quinn {
            quinn.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(1), quinn.wait_idle()).await;
        }
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        // Handlers capture their service (store, table, fabric), which holds this endpoint: a
        // cycle that would keep every service, and its open files, alive for good.
        self.inner.streams.write().clear();
        self.inner.datagrams.write().clear();
        *self.inner.on_revoked.write() = None;
        self.inner.conns.lock().clear();
        self.inner.dialing.lock().clear();
        drop(quinn);
        self.inner.io.close();
        if tokio::time::timeout(Duration::from_secs(5), self.inner.io.wait())
            .await
            .is_err()
        {
            tracing::warn!("the QUIC endpoint did not wind down in time");
        }
    }

    fn quinn(&self) -> Option<quinn::Endpoint> {
        self.inner.quinn.read().clone()
    }

    fn cached(&self, id: &NodeId) -> Option<quinn::Connection> {
        let mut conns = self.inner.conns.lock();
        match conns.get(id) {
            Some((c, _)) if c.close_reason().is_none() => Some(c.clone()),
            Some(_) => {
                conns.remove(id);
                None
            }
            None => None,
        }
    }

    async fn accept_loop(self) {
        let Some(quinn) = self.quinn() else {
            return;
        };
        while let Some(incoming) = quinn.accept().await {
            let this = self.clone();
            self.spawn(async move {
                let remote = incoming.remote_address();
                let conn = match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "refused incoming connection");
                        return;
                    }
                    Err(_) => return,
                };
                let peer = match tls::connection_peer(&conn) {
                    Some(p) => Peer::Member(Box::new(p)),
                    None => Peer::Guest(remote),
                };
                this.adopt(conn, peer);
            });
        }
    }

    /// Remember a connection (members only) and start serving what the peer sends on it.
    fn adopt(&self, conn: quinn::Connection, peer: Peer) {
        if self.is_stopping() {
            conn.close(0u32.into(), b"shutdown");
            return;
        }
        // A revoked node passes the handshake only to be told so, here, before anything runs.
        if self.refuse_if_revoked(&conn, &peer) {
            return;
        }
        if let Peer::Member(_) = &peer {
            let this = self.clone();
            let c = conn.clone();
            self.spawn(async move {
                if let quinn::ConnectionError::ApplicationClosed(close) = c.closed().await
                    && close.error_code == CLOSE_REVOKED.into()
                    && !close.reason.is_empty()
                {
                    let handler = this.inner.on_revoked.read().clone();
                    if let Some(handler) = handler {
                        handler(close.reason.to_vec());
                    }
                }
            });
        }
        if let Peer::Member(info) = &peer {
            self.inner
                .conns
                .lock()
                .insert(info.id, (conn.clone(), crate::now_ms()));
            let this = self.clone();
            let (c, info) = (conn.clone(), info.clone());
            self.spawn(async move { this.datagram_loop(c, *info).await });
        }
        // A guest holds a slot for as long as its connection lives: anyone can be a guest, so
        // guests together get a bounded share of the node.
        let slot = match &peer {
            Peer::Guest(_) => match self.inner.guests.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    conn.close(CLOSE_BUSY.into(), b"too many guest connections");
                    return;
                }
            },
            Peer::Member(_) => None,
        };
        let this = self.clone();
        self.spawn(async move {
            this.stream_loop(conn, peer).await;
            drop(slot);
        });
    }

    fn refuse_if_revoked(&self, conn: &quinn::Connection, peer: &Peer) -> bool {
        if let Peer::Member(info) = peer
            && let Some(doc) = self.inner.trust.revocation_of(&info.id)
        {
            let reason: &[u8] = if doc.is_empty() { b"revoked" } else { &doc };
            conn.close(CLOSE_REVOKED.into(), reason);
            self.forget(&info.id, conn);
            return true;
        }
        false
    }

    fn forget(&self, id: &NodeId, conn: &quinn::Connection) {
        let mut conns = self.inner.conns.lock();
        if conns
            .get(id)
            .is_some_and(|(c, _)| c.stable_id() == conn.stable_id())
        {
            conns.remove(id);
        }
    }

    async fn stream_loop(self, conn: quinn::Connection, peer: Peer) {
        while let Ok((send, mut recv)) = conn.accept_bi().await {
            if self.refuse_if_revoked(&conn, &peer) {
                return;
            }
            let this = self.clone();
            let (peer, conn) = (peer.clone(), conn.clone());
            self.spawn(async move {
                let mut header = [0u8; 7];
                let read = tokio::time::timeout(HEADER_TIMEOUT, recv.read_exact(&mut header));
                if !matches!(read.await, Ok(Ok(()))) {
                    return;
                }
                let Ok((protocol, version)) = wire::parse_stream_header(header) else {
                    conn.close(CLOSE_PROTOCOL_VIOLATION.into(), b"bad stream header");
                    return;
                };
                // A newer peer speaking a newer version of a protocol is told so (the stream
                // is reset with its own code), never misread.
                if version != WIRE_VERSION {
                    tracing::debug!(protocol, version, "stream of an unknown protocol version");
                    let mut send = send;
                    let _ = send.reset(quinn::VarInt::from_u32(RESET_UNKNOWN_VERSION));
                    return;
                }
                let handler = this.inner.streams.read().get(&protocol).cloned();
                match handler {
                    Some((handler, guests)) if guests || matches!(peer, Peer::Member(_)) => {
                        handler(peer, send, recv).await;
                    }
                    Some(_) => {
                        conn.close(CLOSE_PROTOCOL_VIOLATION.into(), b"members only");
                    }
                    None => {
                        let mut send = send;
                        let _ = send.reset(quinn::VarInt::from_u32(404));
                    }
                }
            });
        }
        if let Peer::Member(info) = &peer {
            self.forget(&info.id, &conn);
        }
    }

    async fn datagram_loop(self, conn: quinn::Connection, info: PeerInfo) {
        let peer = Peer::Member(Box::new(info.clone()));
        while let Ok(datagram) = conn.read_datagram().await {
            if self.refuse_if_revoked(&conn, &peer) {
                return;
            }
            let Some(&channel) = datagram.first() else {
                continue;
            };
            let handler = self.inner.datagrams.read().get(&channel).cloned();
            if let Some(handler) = handler {
                handler(&info, datagram.slice(1..));
            }
        }
    }
}

/// Carry bytes both ways between a QUIC stream and a TCP connection until both sides are done
/// (each side's end of input is passed on as the other's end of output).
pub async fn splice(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    tcp: tokio::net::TcpStream,
) {
    let (mut from_tcp, mut to_tcp) = tcp.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut recv, &mut to_tcp).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_tcp).await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_tcp, &mut send).await;
        let _ = send.finish();
    };
    tokio::join!(up, down);
}

/// Open a stream of `protocol` on an existing connection.
pub async fn open_on(
    conn: &quinn::Connection,
    protocol: u16,
) -> Result<(quinn::SendStream, quinn::RecvStream), NetError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    send.write_all(&wire::stream_header(protocol, WIRE_VERSION))
        .await
        .map_err(|e| NetError::Stream(e.to_string()))?;
    Ok((send, recv))
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 8 << 20;

/// A long fat link delivers a window's worth of datagrams in bursts; the kernel's default
/// receive buffer (~208 KiB) drops most of such a burst, and every drop halves the congestion
/// window. Ask for more; where the kernel allows less, that is what the node gets.
fn size_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    for (what, result) in [
        ("receive", sock.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", sock.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot enlarge the UDP {what} buffer");
        }
    }
}

/// Bytes a peer may send on one stream before it is read (see [`transport_config`]).
const STREAM_WINDOW: u32 = 16 << 20;

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        4_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // Let path-MTU discovery go past Ethernet's 1500 where the path allows it (jumbo-frame
    // LANs, loopback): fewer, larger datagrams cost far less CPU per byte.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(16_000);
    t.mtu_discovery_config(Some(mtu));
    // Long fat links: a stream's window must cover the bandwidth-delay product (100 MB/s over a
    // 160 ms round trip is 16 MB), or one shard transfer waits on flow control every window.
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.send_window(8 * u64::from(STREAM_WINDOW));
    // Congestion control starts at 64 KiB rather than 12 KB: requests between members are
    // small and leave a connection app-limited, where the window never grows, so an answer a
    // little over 12 KB (a listing, a batch of rows) would cost a second round trip on a
    // long link every time.
    let mut cc = quinn::congestion::CubicConfig::default();
    cc.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cc));
    t
}

/// Congestion window a connection starts with (see [`transport_config`]).
const INITIAL_WINDOW: u64 = 64 << 10;
