//! SWIM membership (foca) driven over the authenticated QUIC transport's datagrams.
//!
//! foca is a sans-IO state machine; this module is its thin driver: one task owns it, feeds it
//! datagrams and timer events from a channel, and carries out what it asks (send, schedule,
//! notify). After every step the shared view is refreshed from foca's membership table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Foca, Identity, Incarnation, Member, OwnedNotification, PostcardCodec,
    State, Timer,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weft_core::{NodeId, proto};

use crate::Shared;
use crate::view::{MemberEntry, MemberState};

/// A node's SWIM identity: its key, where to reach it, and which run of it this is. A restarted
/// node has a newer generation, so it wins over the identity the fabric declared dead.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SwimId {
    /// The node.
    pub node: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Start time (Unix ms) of this run, bumped when it renews after being declared down.
    pub generation: u64,
}

impl Identity for SwimId {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(SwimId {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Failure-detection timing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwimTiming {
    /// How often each node probes one member.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared dead.
    pub suspect_to_down: Duration,
}

impl Default for SwimTiming {
    fn default() -> Self {
        SwimTiming {
            probe_period: Duration::from_millis(700),
            probe_rtt: Duration::from_millis(350),
            suspect_to_down: Duration::from_millis(1000),
        }
    }
}

pub(crate) enum Input {
    Data(Bytes),
    Timer(Timer<SwimId>),
    Announce(SwimId),
    MarkDown(NodeId),
    Leave(oneshot::Sender<()>),
    /// Periodic: declare down members whose suspicion foca never resolved.
    ExpireSuspicions,
}

/// A suspicion still unresolved (same identity, same incarnation) after this many suspicion
/// periods plus a probe period is declared down by the driver. foca arms the only
/// suspect-to-down timer on the node whose probe failed, and drops it when that node changes
/// identity (`Identity::renew` after being declared down resets foca's timer token); nodes that
/// learned the suspicion by gossip never time it out. If the suspect never hears of the
/// suspicion (e.g. the gossip reached it from senders it considers down, whose payloads it
/// ignores), it stays Suspect everywhere for as long as direct probes keep succeeding.
const STALE_SUSPICION_PERIODS: u32 = 3;

type SwimFoca = Foca<SwimId, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// SWIM datagrams stay well under the QUIC datagram limit (~1200 bytes minus headers).
const MAX_PACKET: usize = 1000;

fn config(timing: SwimTiming) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
    c.probe_period = timing.probe_period;
    c.probe_rtt = timing.probe_rtt;
    c.suspect_to_down_after = timing.suspect_to_down;
    c.max_packet_size = NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(1).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    me: SwimId,
    timing: SwimTiming,
    tx: mpsc::UnboundedSender<Input>,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    let rng: rand::rngs::StdRng = rand::make_rng();
    let mut foca = Foca::new(me, config(timing), rng, PostcardCodec);
    let mut rt = AccumulatingRuntime::new();
    let mut suspects: HashMap<NodeId, (SwimId, Incarnation, Instant)> = HashMap::new();
    let stale_after = timing.suspect_to_down * STALE_SUSPICION_PERIODS + timing.probe_period;
    let mut expire = tokio::time::interval(timing.suspect_to_down);
    loop {
        let input = tokio::select! {
            input = rx.recv() => match input {
                Some(input) => input,
                None => break,
            },
            _ = expire.tick() => Input::ExpireSuspicions,
        };
        let mut leaving = None;
        let result = match input {
            Input::Data(bytes) => foca.handle_data(&bytes, &mut rt),
            Input::Timer(timer) => foca.handle_timer(timer, &mut rt),
            Input::Announce(id) => foca.announce(id, &mut rt),
            Input::MarkDown(node) => {
                let ids: Vec<SwimId> = foca
                    .iter_membership_state()
                    .filter(|m| m.id().node == node)
                    .map(|m| m.id().clone())
                    .collect();
                foca.apply_many(ids.into_iter().map(Member::down), true, &mut rt)
            }
            Input::Leave(done) => {
                leaving = Some(done);
                foca.leave_cluster(&mut rt)
            }
            Input::ExpireSuspicions => {
                let stale: Vec<Member<SwimId>> = foca
                    .iter_membership_state()
                    .filter(|m| m.state() == State::Suspect)
                    .filter(|m| {
                        suspects.get(&m.id().node).is_some_and(|(id, inc, since)| {
                            id == m.id()
                                && *inc == m.incarnation()
                                && since.elapsed() >= stale_after
                        })
                    })
                    .map(|m| Member::new(m.id().clone(), m.incarnation(), State::Down))
                    .collect();
                for m in &stale {
                    tracing::info!(peer = %m.id().node, "suspicion never resolved: declaring down");
                }
                foca.apply_many(stale.into_iter(), true, &mut rt)
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "swim input refused");
        }
        flush(&shared, &mut rt, &tx);
        refresh(&shared, &foca);
        track_suspects(&mut suspects, &foca);
        if let Some(done) = leaving {
            let _ = done.send(());
            return;
        }
    }
}

fn flush(
    shared: &Arc<Shared>,
    rt: &mut AccumulatingRuntime<SwimId>,
    tx: &mpsc::UnboundedSender<Input>,
) {
    while let Some((to, data)) = rt.to_send() {
        if shared.endpoint.trust().is_revoked(&to.node) {
            continue;
        }
        shared
            .endpoint
            .send_datagram(to.node, to.addr, proto::SWIM, &data);
    }
    while let Some((after, timer)) = rt.to_schedule() {
        let tx = tx.clone();
        shared.endpoint.spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Input::Timer(timer));
        });
    }
    while let Some(n) = rt.to_notify() {
        match n {
            OwnedNotification::MemberDown(id) => {
                shared
                    .dead_verdicts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut view = shared.view.write();
                if let Some(m) = view.members.get_mut(&id.node) {
                    m.dead_verdicts += 1;
                }
                tracing::info!(peer = %id.node, "member declared dead");
            }
            OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) => {
                tracing::info!(peer = %id.node, addr = %id.addr, generation = id.generation, "member up");
                // A new run of a node: fetch its new record from it directly rather than
                // waiting for anti-entropy to carry it around.
                let stale = shared
                    .view
                    .read()
                    .records
                    .get(&id.node)
                    .is_none_or(|r| r.body.generation < id.generation);
                if stale {
                    shared.endpoint.forget_if_older(&id.node, id.generation);
                    let this = shared.clone();
                    shared.endpoint.spawn(async move {
                        if let Err(e) = this.sync_with(Some(id.node), id.addr).await {
                            tracing::debug!(peer = %id.node, error = %e, "record fetch failed");
                        }
                    });
                }
            }
            OwnedNotification::Rejoin(id) => {
                tracing::warn!(
                    generation = id.generation,
                    "rejoined after being declared down"
                );
            }
            _ => {}
        }
    }
}

/// Remember since when each member has been Suspect at its current identity and incarnation.
fn track_suspects(suspects: &mut HashMap<NodeId, (SwimId, Incarnation, Instant)>, foca: &SwimFoca) {
    let now = Instant::now();
    let mut current = HashMap::new();
    for m in foca.iter_membership_state() {
        if m.state() != State::Suspect {
            continue;
        }
        let since = match suspects.get(&m.id().node) {
            Some((id, inc, since)) if id == m.id() && *inc == m.incarnation() => *since,
            _ => now,
        };
        current.insert(m.id().node, (m.id().clone(), m.incarnation(), since));
    }
    *suspects = current;
}

fn refresh(shared: &Arc<Shared>, foca: &SwimFoca) {
    let now = Instant::now();
    let mut view = shared.view.write();
    for m in foca.iter_membership_state() {
        let id = m.id();
        let state = match m.state() {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Dead,
        };
        match view.members.get_mut(&id.node) {
            Some(entry) => {
                if entry.swim.generation > id.generation {
                    continue;
                }
                if entry.state != state || entry.swim != *id {
                    if entry.state != state {
                        entry.since = now;
                    }
                    entry.state = state;
                    entry.swim = id.clone();
                }
            }
            None => {
                view.members.insert(
                    id.node,
                    MemberEntry {
                        swim: id.clone(),
                        state,
                        since: now,
                        dead_verdicts: 0,
                        left_generation: None,
                    },
                );
            }
        }
        if let Some(sites) = &shared.site_map
            && let Some(record) = view.records.get(&id.node)
        {
            sites.insert(id.addr, &record.body.cert.body.placement.site);
        }
    }
}
