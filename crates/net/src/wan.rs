//! WAN emulation: per-site-pair one-way delay, jitter and loss applied to a node's outgoing UDP
//! datagrams, so one machine can host a believable multi-region fabric (this kernel has no
//! `netem`).
//!
//! It wraps the UDP socket quinn uses. When emulation is off the endpoint is built on the plain
//! socket and this module is not in the path at all, so it costs nothing.
//!
//! Delayed datagrams wait in one thread per endpoint (a heap ordered by due time), not one task
//! each; see [`run_delay_queue`] for why a thread.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// One direction of a link between two sites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// One-way delay in milliseconds.
    pub delay_ms: f64,
    /// Uniform extra delay in `0..jitter_ms`.
    pub jitter_ms: f64,
    /// Probability in `0..=1` that a datagram is dropped.
    pub loss: f64,
}

impl LinkSpec {
    fn is_noop(&self) -> bool {
        self.delay_ms <= 0.0 && self.jitter_ms <= 0.0 && self.loss <= 0.0
    }
}

/// The emulated network as seen from one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WanConfig {
    /// Links between pairs of sites (symmetric): `(a, b, spec)`. `a == b` sets intra-site links.
    pub links: Vec<(String, String, LinkSpec)>,
    /// Extra loss applied to every datagram that leaves the node, whatever the pair.
    pub loss: f64,
}

/// Whether the link written `x-y` is the one between sites `a` and `b`. Compared as the joined
/// text, so site names may contain '-' (`eu-west-us-east` is the link between `eu-west` and
/// `us-east`, wherever the parser split it).
fn joins(x: &str, y: &str, a: &str, b: &str) -> bool {
    x.len() + y.len() == a.len() + b.len() && format!("{x}-{y}") == format!("{a}-{b}")
}

impl WanConfig {
    /// The link from site `a` to site `b` (including the global loss).
    pub fn link(&self, a: &str, b: &str) -> LinkSpec {
        let mut spec = self
            .links
            .iter()
            .find(|(x, y, _)| joins(x, y, a, b) || joins(x, y, b, a))
            .map(|(_, _, s)| *s)
            .unwrap_or_default();
        spec.loss = 1.0 - (1.0 - spec.loss) * (1.0 - self.loss);
        spec
    }

    /// True when nothing would be delayed or dropped.
    pub fn is_noop(&self) -> bool {
        self.loss <= 0.0 && self.links.iter().all(|(_, _, s)| s.is_noop())
    }

    /// Parse `a-b=DELAY[:JITTER[:LOSS%]]` items separated by commas, e.g.
    /// `eu-us=80ms,eu-ap=150ms:10ms,us-ap=120ms:0ms:1%`. Site names may contain '-'
    /// (`eu-west-us-east=40ms`): links are matched to site pairs by their joined text.
    pub fn parse_links(text: &str) -> Result<Vec<(String, String, LinkSpec)>, String> {
        let mut links = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (pair, spec) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected SITE-SITE=DELAY, e.g. eu-us=80ms"))?;
            let (a, b) = pair
                .split_once('-')
                .ok_or_else(|| format!("{pair:?}: expected two sites joined by '-', e.g. eu-us"))?;
            if a.is_empty() || b.is_empty() {
                return Err(format!("{pair:?}: empty site name"));
            }
            let mut parts = spec.split(':');
            let delay_ms = parse_ms(parts.next().unwrap_or(""))?;
            let jitter_ms = parts.next().map(parse_ms).transpose()?.unwrap_or(0.0);
            let loss = parts.next().map(parse_percent).transpose()?.unwrap_or(0.0);
            if parts.next().is_some() {
                return Err(format!("{spec:?}: expected DELAY[:JITTER[:LOSS%]]"));
            }
            links.push((
                a.to_string(),
                b.to_string(),
                LinkSpec {
                    delay_ms,
                    jitter_ms,
                    loss,
                },
            ));
        }
        Ok(links)
    }
}

/// Parse a duration in milliseconds such as `80ms`, `1.5ms`, `0.2s` or a bare number of ms.
pub fn parse_ms(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 80ms"))?;
    if !value.is_finite() || !(0.0..=60_000.0).contains(&(value * scale)) {
        return Err(format!("{text:?} is out of range (0 to 60s)"));
    }
    Ok(value * scale)
}

/// Parse a loss rate such as `5%` or `0.05`.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(n) => n.parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{text:?} is not a loss rate like 5%"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{text:?}: loss must be between 0% and 100%"));
    }
    Ok(value)
}

impl FromStr for LinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WanConfig::parse_links(&format!("a-b={s}")).map(|mut l| l.remove(0).2)
    }
}

/// Which site each peer address belongs to; filled in by membership as records arrive.
#[derive(Debug, Default)]
pub struct SiteMap {
    sites: RwLock<HashMap<SocketAddr, String>>,
}

impl SiteMap {
    /// Record that `addr` is in `site`.
    pub fn insert(&self, addr: SocketAddr, site: &str) {
        let mut sites = self.sites.write();
        if sites.get(&addr).map(String::as_str) != Some(site) {
            sites.insert(addr, site.to_string());
        }
    }

    /// The site of `addr`, if known.
    pub fn site_of(&self, addr: &SocketAddr) -> Option<String> {
        self.sites.read().get(addr).cloned()
    }
}

/// Counters of what the emulator did.
#[derive(Debug, Default)]
pub struct WanStats {
    /// Datagrams delayed.
    pub delayed: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
}

struct Delayed {
    due: Instant,
    seq: u64,
    destination: SocketAddr,
    contents: Vec<u8>,
    /// Several datagrams of this size, sent in one call (GSO), as quinn handed them over.
    segment_size: Option<usize>,
    src_ip: Option<std::net::IpAddr>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest is on top.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A UDP socket that emulates WAN links on the way out.
pub(crate) struct WanSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    local_site: String,
    config: Arc<RwLock<WanConfig>>,
    sites: Arc<SiteMap>,
    queue: std_mpsc::Sender<Queued>,
    seq: AtomicU64,
    stats: Arc<WanStats>,
    rng: Mutex<rand::rngs::StdRng>,
    /// Latest due time per destination: jitter varies delay but never reorders a flow (real
    /// paths rarely do, and QUIC would read reordering as loss).
    last_due: Mutex<HashMap<SocketAddr, Instant>>,
}

impl fmt::Debug for WanSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WanSocket")
            .field("local_site", &self.local_site)
            .finish_non_exhaustive()
    }
}

impl WanSocket {
    /// Wrap `inner`; also returns the task that sends delayed datagrams, for the endpoint to
    /// run (and stop when it shuts down).
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        local_site: String,
        config: Arc<RwLock<WanConfig>>,
        sites: Arc<SiteMap>,
        stats: Arc<WanStats>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = std_mpsc::channel();
        let sender = inner.clone();
        let thread = std::thread::Builder::new()
            .name("weft-wan".into())
            .spawn(move || run_delay_queue(sender, rx));
        if let Err(e) = thread {
            tracing::error!(error = %e, "cannot start the WAN emulation's sending thread");
        }
        let stop = StopOnDrop(tx.clone());
        let delay_queue = async move {
            let _stop = stop;
            std::future::pending::<()>().await
        };
        let socket = WanSocket {
            inner,
            local_site,
            config,
            sites,
            queue: tx,
            seq: AtomicU64::new(0),
            stats,
            rng: Mutex::new(rand::make_rng()),
            last_due: Mutex::new(HashMap::new()),
        };
        (socket, delay_queue)
    }
}

/// What the sending thread is told.
enum Queued {
    Send(Delayed),
    Stop,
}

/// Tells the sending thread to stop when the endpoint's task holding it is dropped (at
/// shutdown), even while quinn still holds the socket.
struct StopOnDrop(std_mpsc::Sender<Queued>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Queued::Stop);
    }
}

/// Datagrams due this close together leave in one wake-up (one wake-up a datagram would cost
/// more CPU than the sending on a busy machine); each leaves at most this much early.
const BATCH: Duration = Duration::from_micros(250);

/// Send each delayed datagram when it is due. A thread of its own rather than a task: the
/// runtime's timers tick in whole milliseconds and round every wait up, which would add
/// about a millisecond to each hop — as much again as a 1 ms link inside a site — where a
/// thread's timed wait is accurate to tens of microseconds.
fn run_delay_queue(inner: Arc<dyn AsyncUdpSocket>, rx: std_mpsc::Receiver<Queued>) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    loop {
        let got = match heap.peek().map(|d| d.due) {
            Some(due) => {
                let now = Instant::now() + BATCH;
                if due <= now {
                    Err(std_mpsc::RecvTimeoutError::Timeout)
                } else {
                    rx.recv_timeout(due - now)
                }
            }
            None => rx
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(Queued::Send(d)) => {
                heap.push(d);
                continue;
            }
            Ok(Queued::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now() + BATCH;
        while heap.peek().is_some_and(|d| d.due <= now) {
            let Some(d) = heap.pop() else { break };
            let transmit = Transmit {
                destination: d.destination,
                ecn: None,
                contents: &d.contents,
                segment_size: d.segment_size,
                src_ip: d.src_ip,
            };
            // A full socket buffer means wait for it, as the kernel would make a real sender
            // wait; dropping here would turn every burst into loss. Past a second the
            // datagram is lost (as a real path would lose it).
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Err(e) = inner.try_send(&transmit) {
                if e.kind() != io::ErrorKind::WouldBlock || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl AsyncUdpSocket for WanSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let link = {
            let config = self.config.read();
            match self.sites.site_of(&transmit.destination) {
                Some(site) => config.link(&self.local_site, &site),
                None => LinkSpec {
                    loss: config.loss,
                    ..LinkSpec::default()
                },
            }
        };
        if link.is_noop() {
            return self.inner.try_send(transmit);
        }
        // A batch of datagrams (GSO) on a lossy link: each is lost or not on its own.
        if link.loss > 0.0
            && let Some(size) = transmit.segment_size
            && transmit.contents.len() > size
        {
            for one in transmit.contents.chunks(size) {
                self.try_send(&Transmit {
                    contents: one,
                    segment_size: None,
                    ..*transmit
                })?;
            }
            return Ok(());
        }
        let (drop, jitter) = {
            let mut rng = self.rng.lock();
            let drop = link.loss > 0.0 && rng.random_bool(link.loss.min(1.0));
            let jitter = if link.jitter_ms > 0.0 {
                rng.random_range(0.0..link.jitter_ms)
            } else {
                0.0
            };
            (drop, jitter)
        };
        if drop {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let delay = link.delay_ms + jitter;
        if delay <= 0.0 {
            return self.inner.try_send(transmit);
        }
        self.stats.delayed.fetch_add(1, Ordering::Relaxed);
        let due = {
            let mut last = self.last_due.lock();
            let due = Instant::now() + Duration::from_secs_f64(delay / 1000.0);
            let due = last.get(&transmit.destination).map_or(due, |l| due.max(*l));
            last.insert(transmit.destination, due);
            due
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let item = Delayed {
            due,
            seq,
            destination: transmit.destination,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        // The queue only closes when the runtime shuts down; then the datagram is lost anyway.
        let _ = self.queue.send(Queued::Send(item));
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        // Batches (GSO) are delayed as one; on a lossy link they are split so that each
        // datagram is lost or not on its own.
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_specs() {
        let links = WanConfig::parse_links("eu-us=80ms, eu-ap=0.15s:10ms ,us-ap=120:0:1%").unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].2.delay_ms, 80.0);
        assert_eq!(links[1].2.delay_ms, 150.0);
        assert_eq!(links[1].2.jitter_ms, 10.0);
        assert!((links[2].2.loss - 0.01).abs() < 1e-12);
        for bad in [
            "eu",
            "eu=5ms",
            "eu-us=fast",
            "eu-us=5ms:1ms:200%",
            "-us=1ms",
            "eu-us=1:2:3:4",
        ] {
            assert!(WanConfig::parse_links(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_are_symmetric_and_loss_composes() {
        let cfg = WanConfig {
            links: WanConfig::parse_links("eu-us=80ms:0ms:10%").unwrap(),
            loss: 0.1,
        };
        assert_eq!(cfg.link("us", "eu").delay_ms, 80.0);
        assert!((cfg.link("eu", "us").loss - 0.19).abs() < 1e-9);
        assert_eq!(cfg.link("eu", "eu").delay_ms, 0.0);
        assert!((cfg.link("eu", "eu").loss - 0.1).abs() < 1e-9);
        assert!(!cfg.is_noop());
        assert!(WanConfig::default().is_noop());
    }

    #[test]
    fn site_names_may_contain_dashes() {
        let w = WanConfig {
            links: WanConfig::parse_links("eu-west-us-east=40ms,eu-west-eu-west=1ms").unwrap(),
            loss: 0.0,
        };
        assert_eq!(w.link("eu-west", "us-east").delay_ms, 40.0);
        assert_eq!(w.link("us-east", "eu-west").delay_ms, 40.0);
        assert_eq!(w.link("eu-west", "eu-west").delay_ms, 1.0);
        assert_eq!(w.link("eu", "west").delay_ms, 0.0);
        assert_eq!(w.link("us-east", "us-east").delay_ms, 0.0);
    }
}
