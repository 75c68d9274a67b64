//! The peers a node knew, kept in its data directory so a restart finds the fabric even if
//! its bootstrap node is gone.

use std::net::SocketAddr;
use std::time::Duration;

use weft_fabric::{Fabric, MemberState};

use crate::{DataDir, Node};

const PEERS_FILE: &str = "peers.json";

impl Node {
    pub(crate) async fn persist_peers(self) {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            save_peers(&self.inner.dir, self.fabric());
        }
    }
}

pub(crate) fn save_peers(dir: &DataDir, fabric: &Fabric) {
    let addrs: Vec<SocketAddr> = fabric
        .members()
        .iter()
        .filter(|m| !m.is_self && m.state != MemberState::Revoked)
        .filter(|m| m.state != MemberState::Left)
        .filter_map(|m| m.addr)
        .collect();
    if addrs.is_empty() {
        return;
    }
    if let Ok(json) = serde_json::to_vec(&addrs)
        && let Err(e) = dir.write_atomic(PEERS_FILE, &json)
    {
        tracing::warn!(error = %e, "cannot save known peers");
    }
}

pub(crate) fn load_peers(dir: &DataDir) -> Vec<SocketAddr> {
    std::fs::read(dir.path(PEERS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
