//! What a node currently believes about the fabric, and the snapshot it shows operators.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_core::{NodeId, NodeRecord, Revocation};

use crate::swim::SwimId;
use crate::vivaldi::{Coordinate, Vivaldi};

/// A member's liveness as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes; will be declared dead unless it refutes.
    Suspect,
    /// Declared dead by the fabric.
    Dead,
    /// Left the fabric gracefully (announced it was leaving).
    Left,
    /// Its membership was revoked.
    Revoked,
}

impl MemberState {
    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
            MemberState::Revoked => "revoked",
        }
    }
}

/// One row of `weft nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Full node id (hex).
    pub id: String,
    /// Short node id.
    pub short_id: String,
    /// True for the node answering.
    pub is_self: bool,
    /// Site, region, jurisdiction (from its certificate).
    pub site: String,
    /// Region.
    pub region: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// QUIC address.
    pub addr: Option<SocketAddr>,
    /// Liveness.
    pub state: MemberState,
    /// Seconds in the current state.
    pub state_secs: f64,
    /// Seconds since the node's current run started (from its record).
    pub uptime_secs: Option<f64>,
    /// RTT estimated from network coordinates, in ms.
    pub est_rtt_ms: Option<f64>,
    /// RTT measured by probes (median of recent samples), in ms.
    pub measured_rtt_ms: Option<f64>,
    /// Roles.
    pub roles: Vec<String>,
    /// Operator labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Offered CPUs.
    pub cpus: u32,
    /// Offered memory (bytes).
    pub mem_bytes: u64,
    /// Offered disk (bytes).
    pub disk_bytes: u64,
    /// Software version.
    pub software: String,
    /// Times this node has seen the member declared dead.
    pub dead_verdicts: u64,
}

pub(crate) struct MemberEntry {
    pub swim: SwimId,
    pub state: MemberState,
    pub since: Instant,
    pub dead_verdicts: u64,
    /// The generation that announced a graceful leave, if any.
    pub left_generation: Option<u64>,
}

const RTT_WINDOW: usize = 5;

/// Mutable fabric knowledge, behind one lock.
pub(crate) struct View {
    pub members: HashMap<NodeId, MemberEntry>,
    pub records: HashMap<NodeId, NodeRecord>,
    pub revocations: HashMap<NodeId, Revocation>,
    pub vivaldi: Vivaldi<NodeId>,
    pub coords: HashMap<NodeId, Coordinate>,
    pub rtts: HashMap<NodeId, VecDeque<Duration>>,
}

impl View {
    pub fn new(me: NodeRecord) -> Self {
        let mut records = HashMap::new();
        records.insert(me.node(), me);
        View {
            members: HashMap::new(),
            records,
            revocations: HashMap::new(),
            vivaldi: Vivaldi::default(),
            coords: HashMap::new(),
            rtts: HashMap::new(),
        }
    }

    pub fn record_rtt(&mut self, peer: NodeId, rtt: Duration) {
        let w = self.rtts.entry(peer).or_default();
        if w.len() == RTT_WINDOW {
            w.pop_front();
        }
        w.push_back(rtt);
    }

    pub fn measured_rtt(&self, peer: &NodeId) -> Option<Duration> {
        let w = self.rtts.get(peer)?;
        let mut v: Vec<Duration> = w.iter().copied().collect();
        v.sort();
        v.get(v.len() / 2).copied()
    }

    /// Members believed alive (alive or suspect), with their addresses.
    pub fn live_peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.members
            .iter()
            .filter(|(_, m)| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|(id, m)| (*id, m.swim.addr))
            .collect()
    }

    pub fn status(&self, local: NodeId, now_ms: u64) -> Vec<MemberStatus> {
        let mut ids: Vec<NodeId> = self.records.keys().copied().collect();
        for id in self.members.keys() {
            if !self.records.contains_key(id) {
                ids.push(*id);
            }
        }
        let me = self.vivaldi.coordinate();
        let mut rows: Vec<MemberStatus> = ids
            .into_iter()
            .map(|id| {
                let record = self.records.get(&id);
                let member = self.members.get(&id);
                let is_self = id == local;
                let state = if self.revocations.contains_key(&id) {
                    MemberState::Revoked
                } else if is_self {
                    MemberState::Alive
                } else {
                    member.map_or(MemberState::Dead, |m| match m.state {
                        MemberState::Dead
                            if m.left_generation.is_some_and(|g| {
                                (g..=g.saturating_add(16)).contains(&m.swim.generation)
                            }) =>
                        {
                            MemberState::Left
                        }
                        other => other,
                    })
                };
                let cert = record.map(|r| &r.body.cert.body);
                let placement = cert.map(|c| c.placement.clone()).unwrap_or_default();
                MemberStatus {
                    id: id.to_hex(),
                    short_id: id.short(),
                    is_self,
                    site: placement.site,
                    region: placement.region,
                    jurisdiction: placement.jurisdiction,
                    addr: record
                        .map(|r| r.body.addr)
                        .or_else(|| member.map(|m| m.swim.addr)),
                    state,
                    state_secs: member.map_or(0.0, |m| m.since.elapsed().as_secs_f64()),
                    uptime_secs: record
                        .map(|r| now_ms.saturating_sub(r.body.generation) as f64 / 1000.0),
                    est_rtt_ms: (!is_self)
                        .then(|| self.coords.get(&id))
                        .flatten()
                        .map(|c| me.distance_to(c).as_secs_f64() * 1000.0),
                    measured_rtt_ms: self.measured_rtt(&id).map(|d| d.as_secs_f64() * 1000.0),
                    roles: cert
                        .map(|c| c.roles.iter().map(|r| r.as_str().to_string()).collect())
                        .unwrap_or_default(),
                    labels: record.map(|r| r.body.labels.clone()).unwrap_or_default(),
                    cpus: record.map_or(0, |r| r.body.capacity.cpus),
                    mem_bytes: record.map_or(0, |r| r.body.capacity.mem_bytes),
                    disk_bytes: record.map_or(0, |r| r.body.capacity.disk_bytes),
                    software: record.map(|r| r.body.software.clone()).unwrap_or_default(),
                    dead_verdicts: member.map_or(0, |m| m.dead_verdicts),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.site.as_str(), a.id.as_str()).cmp(&(b.site.as_str(), b.id.as_str()))
        });
        rows
    }
}
