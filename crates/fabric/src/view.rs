//! What a node currently believes about the fabric, and the snapshot it shows operators.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_core::{Capacity, Load, NodeId, NodeRecord, Placement, Revocation, Role};

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

/// A member of the fabric as every layer sees it: typed, from its verified record and this
/// node's view of its liveness and distance. (Display rows are made from it at the API edge.)
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// True for the node asking.
    pub is_self: bool,
    /// Site, region and jurisdiction, from its membership certificate.
    pub placement: Placement,
    /// Roles, from its certificate.
    pub roles: Vec<Role>,
    /// QUIC address.
    pub addr: Option<SocketAddr>,
    /// Liveness.
    pub state: MemberState,
    /// How long it has been in that state.
    pub state_for: Duration,
    /// How long its current run has been up (from its record).
    pub uptime: Option<Duration>,
    /// Its network coordinate, if one was learned.
    pub coordinate: Option<Coordinate>,
    /// RTT estimated from network coordinates.
    pub est_rtt: Option<Duration>,
    /// RTT measured by probes (median of recent samples).
    pub measured_rtt: Option<Duration>,
    /// Operator labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Offered resources.
    pub capacity: Capacity,
    /// Live load, as it last reported it.
    pub load: Load,
    /// Software version.
    pub software: String,
    /// Times this node has seen the member declared dead.
    pub dead_verdicts: u64,
    /// Whether this node holds its signed record (with its membership certificate); an id
    /// known only from gossip does not.
    pub recorded: bool,
}

impl Member {
    /// Whether its certificate grants `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Alive (answering probes) right now.
    pub fn is_alive(&self) -> bool {
        self.state == MemberState::Alive
    }

    /// Whether it holds its share of the replicated table: alive, or a certified member only
    /// suspected. A suspicion — which any member can raise about any other, and which the
    /// suspect refutes within a probe period — must not move rows to other nodes: replicas
    /// that change with every suspicion would read rows from nodes that never held them (or
    /// held only what someone planted there).
    pub fn in_ring(&self) -> bool {
        self.state == MemberState::Alive || (self.state == MemberState::Suspect && self.recorded)
    }
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

    pub fn members(&self, local: NodeId, now_ms: u64) -> Vec<Member> {
        let mut ids: Vec<NodeId> = self.records.keys().copied().collect();
        for id in self.members.keys() {
            if !self.records.contains_key(id) {
                ids.push(*id);
            }
        }
        let me = self.vivaldi.coordinate();
        let mut rows: Vec<Member> = ids
            .into_iter()
            .map(|id| {
                let record = self.records.get(&id);
                let member = self.members.get(&id);
                let is_self = id == local;
                let state = if self.revocations.contains_key(&id) {
                    MemberState::Revoked
                } else if is_self {
                    MemberState::Alive
                } else if record.is_none() {
                    // Known only from gossip (no signed record with a membership certificate
                    // yet): never alive, so it owns no partition and holds no shard — or a
                    // member could ground phantom ids to deny others' quorums.
                    MemberState::Suspect
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
                Member {
                    id,
                    is_self,
                    placement: cert.map(|c| c.placement.clone()).unwrap_or_default(),
                    roles: cert.map(|c| c.roles.clone()).unwrap_or_default(),
                    addr: record
                        .map(|r| r.body.addr)
                        .or_else(|| member.map(|m| m.swim.addr)),
                    state,
                    state_for: member.map_or(Duration::ZERO, |m| m.since.elapsed()),
                    uptime: record
                        .map(|r| Duration::from_millis(now_ms.saturating_sub(r.body.generation))),
                    coordinate: if is_self {
                        Some(me.clone())
                    } else {
                        self.coords.get(&id).cloned()
                    },
                    est_rtt: (!is_self)
                        .then(|| self.coords.get(&id))
                        .flatten()
                        .map(|c| me.distance_to(c)),
                    measured_rtt: self.measured_rtt(&id),
                    labels: record.map(|r| r.body.labels.clone()).unwrap_or_default(),
                    capacity: record.map(|r| r.body.capacity.clone()).unwrap_or_default(),
                    load: record.map(|r| r.body.load.clone()).unwrap_or_default(),
                    software: record.map(|r| r.body.software.clone()).unwrap_or_default(),
                    dead_verdicts: member.map_or(0, |m| m.dead_verdicts),
                    recorded: record.is_some(),
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.placement.site, a.id.0).cmp(&(&b.placement.site, b.id.0)));
        rows
    }
}
