//! A node's own summary, as `weft status` shows it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use weft_fabric::MemberState;

use crate::Node;

/// A node's own summary, as `weft status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Full id.
    pub id: String,
    /// Short id.
    pub short_id: String,
    /// Fabric id.
    pub fabric: String,
    /// Site.
    pub site: String,
    /// Region.
    pub region: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// Roles.
    pub roles: Vec<String>,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Holds the admin key.
    pub admin: bool,
    /// Members by state (including this node).
    pub alive: usize,
    /// Suspect members.
    pub suspect: usize,
    /// Dead members.
    pub dead: usize,
    /// Members that left gracefully.
    pub left: usize,
    /// Revoked members.
    pub revoked: usize,
    /// Dead verdicts this node has seen.
    pub dead_verdicts: u64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Software version.
    pub version: String,
    /// Bytes of shards stored here.
    pub store_used: u64,
    /// Shard capacity offered.
    pub store_capacity: u64,
    /// Datagrams delayed and dropped by WAN emulation.
    pub wan_delayed: u64,
    /// Datagrams dropped by WAN emulation.
    pub wan_dropped: u64,
}

impl Node {
    /// This node's summary.
    pub fn status(&self) -> NodeStatus {
        let members = self.members();
        let count = |s: MemberState| members.iter().filter(|m| m.state == s).count();
        let (wan_delayed, wan_dropped) = self.inner.endpoint.wan_counters();
        let body = &self.inner.cert.body;
        NodeStatus {
            id: self.id().to_hex(),
            short_id: self.id().short(),
            fabric: body.fabric.to_hex(),
            site: body.placement.site.clone(),
            region: body.placement.region.clone(),
            jurisdiction: body.placement.jurisdiction.clone(),
            roles: body.roles.iter().map(|r| r.as_str().to_string()).collect(),
            addr: self.inner.advertise,
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            admin: self.inner.admin.is_some(),
            alive: count(MemberState::Alive),
            suspect: count(MemberState::Suspect),
            dead: count(MemberState::Dead),
            left: count(MemberState::Left),
            revoked: count(MemberState::Revoked),
            dead_verdicts: self.fabric().dead_verdicts(),
            rss_bytes: rss_bytes(),
            version: weft_core::SOFTWARE_VERSION.to_string(),
            store_used: self.storage().local().used(),
            store_capacity: self.storage().local().capacity(),
            wan_delayed,
            wan_dropped,
        }
    }
}

/// Resident set size of this process (Linux), in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
