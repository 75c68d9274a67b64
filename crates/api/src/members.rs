//! The display row of a fabric member, as `GET /v1/nodes` answers and `weft nodes` prints it:
//! made here, at the edge, from the typed [`weft_node::Member`] every layer uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use weft_node::{Member, MemberState};

/// One row of `weft nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Full node id (hex).
    pub id: String,
    /// Short node id.
    pub short_id: String,
    /// True for the node answering.
    pub is_self: bool,
    /// Site (from its certificate).
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
    pub labels: BTreeMap<String, String>,
    /// Offered CPUs.
    pub cpus: u32,
    /// Offered memory (bytes).
    pub mem_bytes: u64,
    /// Offered disk (bytes).
    pub disk_bytes: u64,
    /// Jobs running.
    #[serde(default)]
    pub jobs: u32,
    /// Work waiting.
    #[serde(default)]
    pub queued: u32,
    /// Software version.
    pub software: String,
    /// Times this node has seen the member declared dead.
    pub dead_verdicts: u64,
}

impl From<&Member> for MemberStatus {
    fn from(m: &Member) -> MemberStatus {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        MemberStatus {
            id: m.id.to_hex(),
            short_id: m.id.short(),
            is_self: m.is_self,
            site: m.placement.site.clone(),
            region: m.placement.region.clone(),
            jurisdiction: m.placement.jurisdiction.clone(),
            addr: m.addr,
            state: m.state,
            state_secs: m.state_for.as_secs_f64(),
            uptime_secs: m.uptime.map(|d| d.as_secs_f64()),
            est_rtt_ms: m.est_rtt.map(ms),
            measured_rtt_ms: m.measured_rtt.map(ms),
            roles: m.roles.iter().map(|r| r.as_str().to_string()).collect(),
            labels: m.labels.clone(),
            cpus: m.capacity.cpus,
            mem_bytes: m.capacity.mem_bytes,
            disk_bytes: m.capacity.disk_bytes,
            jobs: m.load.jobs,
            queued: m.load.queued,
            software: m.software.clone(),
            dead_verdicts: m.dead_verdicts,
        }
    }
}
