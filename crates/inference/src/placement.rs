//! Where a model is served: computed, not assigned. Every node evaluates [`holders`] on its own
//! view of the membership, so a holder that dies is replaced as soon as SWIM declares it dead,
//! with no coordinator; during a membership change two views can disagree for a moment, so a
//! model may briefly load on one node more (harmless) or one fewer. Pure: no IO.

use std::collections::HashSet;

use weft_core::{NodeId, Role};
use weft_fabric::{Member, MemberState};

use crate::ModelRecord;

/// The nodes that should hold `model` now: nodes with the inference role, alive, with the
/// memory it needs (when they say how much they offer) and where its regions and
/// jurisdictions allow — ranked by rendezvous hash of the model's name and the node, one per
/// site before any site gets a second, as many as it asks for. Every node computes the same.
pub fn holders(model: &ModelRecord, members: &[Member]) -> Vec<NodeId> {
    let need = model.memory_needed();
    let mut eligible: Vec<(&Member, [u8; 32])> = members
        .iter()
        .filter(|m| {
            m.has_role(Role::Inference)
                && m.state == MemberState::Alive
                && (m.capacity.mem_bytes == 0 || m.capacity.mem_bytes >= need)
                && (model.regions.is_empty() || model.regions.contains(&m.placement.region))
                && (model.jurisdictions.is_empty()
                    || model
                        .jurisdictions
                        .iter()
                        .any(|j| j.eq_ignore_ascii_case(&m.placement.jurisdiction)))
        })
        .map(|m| {
            let mut h = blake3::Hasher::new_derive_key("weft model placement v1");
            h.update(model.name.as_bytes());
            h.update(&m.id.0);
            (m, *h.finalize().as_bytes())
        })
        .collect();
    eligible.sort_by_key(|e| std::cmp::Reverse(e.1));
    let want = model.replicas as usize;
    let mut chosen: Vec<NodeId> = Vec::new();
    let mut sites = HashSet::new();
    for (m, _) in &eligible {
        if chosen.len() < want && sites.insert(m.placement.site.clone()) {
            chosen.push(m.id);
        }
    }
    for (m, _) in &eligible {
        if chosen.len() < want && !chosen.contains(&m.id) {
            chosen.push(m.id);
        }
    }
    chosen
}

/// The nodes among `serving` (nodes whose `serve` row says they hold `model` ready) that a
/// request may go to: only those the placement would choose — with one rank to spare, so that
/// while views disagree for a moment (a holder replaced, its successor still loading) the old
/// holder stays reachable — and so only inference nodes in the model's regions. A member that
/// writes a `serve` row for a model it was not placed with gets no prompts.
pub fn routable(model: &ModelRecord, members: &[Member], serving: &[NodeId]) -> Vec<NodeId> {
    let spare = ModelRecord {
        replicas: model.replicas.saturating_add(1),
        ..model.clone()
    };
    let placed = holders(&spare, members);
    serving
        .iter()
        .copied()
        .filter(|n| placed.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelFile, ModelKind};
    use std::time::Duration;
    use weft_core::SecretKey;
    use weft_core::{Capacity, Placement};

    fn member(n: u8, site: &str, region: &str, roles: &[Role], mem: u64) -> Member {
        let id = SecretKey::from_seed([n; 32]).public();
        Member {
            id,
            is_self: false,
            placement: Placement {
                site: site.into(),
                region: region.into(),
                jurisdiction: if region == "eu" {
                    "DE".into()
                } else {
                    "US".into()
                },
            },
            roles: roles.to_vec(),
            addr: None,
            state: MemberState::Alive,
            state_for: Duration::ZERO,
            uptime: None,
            coordinate: None,
            est_rtt: None,
            measured_rtt: None,
            labels: Default::default(),
            capacity: Capacity {
                cpus: 2,
                mem_bytes: mem,
                disk_bytes: 0,
            },
            load: Default::default(),
            software: String::new(),
            dead_verdicts: 0,
            recorded: true,
        }
    }

    fn model(replicas: u32, regions: &[&str]) -> ModelRecord {
        ModelRecord {
            name: "minilm".into(),
            owner: SecretKey::from_seed([9; 32]).public(),
            kind: ModelKind::Embeddings,
            files: vec![ModelFile {
                name: "model.safetensors".into(),
                size: 100 << 20,
                blake3: "ab".repeat(32),
                capability: String::new(),
            }],
            replicas,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            jurisdictions: vec![],
            created_ms: 0,
        }
    }

    fn fabric() -> Vec<Member> {
        let ai = [Role::Storage, Role::Inference];
        vec![
            member(1, "eu-1", "eu", &ai, 8 << 30),
            member(2, "eu-1", "eu", &ai, 8 << 30),
            member(3, "eu-2", "eu", &ai, 8 << 30),
            member(4, "us-1", "us", &ai, 8 << 30),
            member(5, "us-1", "us", &[Role::Storage], 8 << 30),
            member(6, "us-2", "us", &ai, 100 << 20),
        ]
    }

    #[test]
    fn replicas_go_to_inference_nodes_with_room_where_allowed_one_per_site_first() {
        let members = fabric();
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let three = holders(&model(3, &[]), &members);
        assert_eq!(three.len(), 3);
        // Not the storage-only node, not the one with too little memory.
        assert!(
            !three.contains(&ids[4]) && !three.contains(&ids[5]),
            "{three:?}"
        );
        // Three sites are eligible (eu-1, eu-2, us-1): one each.
        let sites: HashSet<_> = three
            .iter()
            .map(|id| {
                members
                    .iter()
                    .find(|m| m.id == *id)
                    .unwrap()
                    .placement
                    .site
                    .clone()
            })
            .collect();
        assert_eq!(sites.len(), 3);
        let eu = holders(&model(5, &["eu"]), &members);
        assert_eq!(eu.len(), 3, "only three eu nodes can hold it");
        assert!(eu.iter().all(|id| ids[..3].contains(id)));
        // Every node computes the same, in any order of the membership.
        let mut shuffled = members.clone();
        shuffled.reverse();
        assert_eq!(holders(&model(3, &[]), &shuffled), three);
        // A holder that dies is replaced; the others stay.
        let mut fewer = members.clone();
        let gone = three[0];
        fewer.iter_mut().find(|m| m.id == gone).unwrap().state = MemberState::Dead;
        let after = holders(&model(2, &[]), &fewer);
        assert!(!after.contains(&gone));
        assert!(
            holders(&model(2, &[]), &members)
                .iter()
                .filter(|id| **id != gone)
                .all(|id| after.contains(id))
        );
        assert!(holders(&model(1, &["ap"]), &members).is_empty());
    }

    /// [untrusted] 12: a member writes a `serve` row saying it holds a model ready — one the
    /// placement never chose it for, or outside the model's regions — to collect users' prompts.
    /// The router sends it nothing.
    #[test]
    fn only_nodes_the_placement_chose_receive_requests() {
        let members = fabric();
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let eu = model(1, &["eu"]);
        let placed = holders(&eu, &members);
        assert_eq!(placed.len(), 1);
        // Everyone claims to serve it: only the holder and the next-ranked eu node may be
        // sent requests; never the us node, the storage-only node, the one without memory.
        let may = routable(&eu, &members, &ids);
        assert!(may.contains(&placed[0]));
        assert_eq!(may.len(), 2, "{may:?}");
        assert!(may.iter().all(|n| ids[..3].contains(n)));
        // Nobody but who claims: a placed node that says nothing is not routed to.
        assert!(routable(&eu, &members, &[]).is_empty());
    }
}
