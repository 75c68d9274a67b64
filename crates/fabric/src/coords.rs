//! RTT probes that feed Vivaldi coordinates: a ping datagram to a random live member, answered
//! with a pong carrying the responder's coordinate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use weft_core::{NodeId, proto, wire};
use weft_net::PeerInfo;

use crate::Shared;
use crate::vivaldi::Coordinate;

/// A coordinate-protocol datagram.
#[derive(Debug, Serialize, Deserialize)]
pub enum CoordMessage {
    /// Please answer.
    Ping {
        /// Matches the pong to the ping.
        nonce: u64,
    },
    /// The sender is leaving the fabric gracefully (sent just before its SWIM leave).
    Leaving {
        /// The generation that is leaving.
        generation: u64,
    },
    /// The answer, with the responder's coordinate.
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The responder's coordinate.
        coord: Coordinate,
    },
}

/// Pings sent and not yet answered, by nonce.
#[derive(Default)]
pub(crate) struct Outstanding {
    pings: Mutex<HashMap<u64, (NodeId, Instant)>>,
}

const PING_EXPIRY: Duration = Duration::from_secs(10);

impl Shared {
    pub(crate) fn register_coords(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.endpoint.register_datagram(
            proto::COORD,
            Arc::new(move |peer: &PeerInfo, bytes: Bytes| {
                if let Some(shared) = weak.upgrade() {
                    shared.on_coord_datagram(peer, &bytes);
                }
            }),
        );
    }

    fn on_coord_datagram(&self, peer: &PeerInfo, bytes: &[u8]) {
        let Ok(msg) = wire::decode::<CoordMessage>(bytes) else {
            return;
        };
        match msg {
            CoordMessage::Ping { nonce } => {
                let (coord, addr) = {
                    let view = self.view.read();
                    let addr = view
                        .records
                        .get(&peer.id)
                        .map(|r| r.body.addr)
                        .or_else(|| view.members.get(&peer.id).map(|m| m.swim.addr));
                    (view.vivaldi.coordinate().clone(), addr)
                };
                if let Some(addr) = addr {
                    let pong = wire::encode(&CoordMessage::Pong { nonce, coord });
                    self.endpoint
                        .send_datagram(peer.id, addr, proto::COORD, &pong);
                }
            }
            CoordMessage::Leaving { generation } => {
                // A renewed identity (generation bumped after a false death) is the same run.
                if let Some(m) = self.view.write().members.get_mut(&peer.id)
                    && m.swim.generation <= generation.saturating_add(16)
                    && m.swim.generation >= generation
                {
                    m.left_generation = Some(generation);
                }
            }
            CoordMessage::Pong { nonce, coord } => {
                let Some((expected, sent)) = self.outstanding.pings.lock().remove(&nonce) else {
                    return;
                };
                if expected != peer.id {
                    return;
                }
                let rtt = sent.elapsed();
                let mut view = self.view.write();
                if view.vivaldi.observe(&peer.id, &coord, rtt).is_ok() {
                    view.coords.insert(peer.id, coord);
                    view.record_rtt(peer.id, rtt);
                }
            }
        }
    }

    /// Tell every live peer this run is leaving.
    pub(crate) fn announce_leaving(&self, generation: u64) {
        let msg = wire::encode(&CoordMessage::Leaving { generation });
        for (id, addr) in self.view.read().live_peers() {
            self.endpoint.send_datagram(id, addr, proto::COORD, &msg);
        }
    }

    pub(crate) async fn run_coords(self: Arc<Self>, interval: Duration) {
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        loop {
            let jitter = rng.random_range(0.5..1.5);
            tokio::time::sleep(interval.mul_f64(jitter)).await;
            let peers = self.view.read().live_peers();
            if peers.is_empty() {
                continue;
            }
            let (id, addr) = peers[rng.random_range(0..peers.len())];
            let nonce: u64 = rng.random();
            {
                let mut pings = self.outstanding.pings.lock();
                pings.retain(|_, (_, t)| t.elapsed() < PING_EXPIRY);
                pings.insert(nonce, (id, Instant::now()));
            }
            let ping = wire::encode(&CoordMessage::Ping { nonce });
            self.endpoint.send_datagram(id, addr, proto::COORD, &ping);
        }
    }
}
