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
    /// A datagram and the peer the transport authenticated as its sender.
    Data(NodeId, Bytes),
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

type SwimFoca = Foca<SwimId, Bounded, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// SWIM datagrams stay well under the QUIC datagram limit (~1200 bytes minus headers).
const MAX_PACKET: usize = 1000;

/// The highest incarnation at which a packet may suspect (or call down) a node other than its
/// sender. A node's own incarnation grows by one per suspicion it refutes and starts again at
/// each generation, so honest ones stay far below; a node this high is judged by this node's
/// own probes only.
const MAX_HEARSAY_INCARNATION: Incarnation = 1 << 15;

/// How far ahead of this node's clock an identity's generation (its run's start time) may be.
const MAX_GENERATION_AHEAD_MS: u64 = 60_000;

/// foca's postcard encoding, refusing identities from the future: a generation is a run's start
/// time, so one far ahead can only be a member's forgery — announced down, it would keep a
/// victim's every later run dead (a generation wins only over smaller ones).
///
/// And *down is not hearsay*: a packet's word that some other node is down is taken as a
/// suspicion only (a node may declare only itself down, leaving). foca makes a down identity
/// final — the victim must take a new generation — so one member repeating "down" about
/// others could make any node flap in every view. A suspicion the victim refutes; one it does
/// not is declared down here by this node's own probes or, unresolved, by the driver
/// ([`STALE_SUSPICION_PERIODS`]). Nor may hearsay suspect another node at an incarnation past
/// [`MAX_HEARSAY_INCARNATION`]: a suspicion at foca's last incarnation cannot be refuted, so
/// the victim would have to take a new generation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bounded {
    /// The node the packet being decoded is from (its header is decoded first).
    from: Option<NodeId>,
}

fn bounded(id: &SwimId) -> Result<(), postcard::Error> {
    if id.generation > weft_net::now_ms().saturating_add(MAX_GENERATION_AHEAD_MS) {
        return Err(postcard::Error::SerdeDeCustom);
    }
    Ok(())
}

impl foca::Codec<SwimId> for Bounded {
    type Error = postcard::Error;

    fn encode_header(
        &mut self,
        header: &foca::Header<SwimId>,
        buf: impl bytes::BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec.encode_header(header, buf)
    }

    fn decode_header(&mut self, buf: impl bytes::Buf) -> Result<foca::Header<SwimId>, Self::Error> {
        self.from = None;
        let h: foca::Header<SwimId> = PostcardCodec.decode_header(buf)?;
        bounded(&h.src)?;
        bounded(&h.dst)?;
        self.from = Some(h.src.node);
        Ok(h)
    }

    fn encode_member(
        &mut self,
        member: &Member<SwimId>,
        buf: impl bytes::BufMut,
    ) -> Result<(), Self::Error> {
        PostcardCodec.encode_member(member, buf)
    }

    fn decode_member(&mut self, buf: impl bytes::Buf) -> Result<Member<SwimId>, Self::Error> {
        let m: Member<SwimId> = PostcardCodec.decode_member(buf)?;
        bounded(m.id())?;
        if self.from == Some(m.id().node) {
            return Ok(m);
        }
        match m.state() {
            State::Alive => Ok(m),
            _ if m.incarnation() >= MAX_HEARSAY_INCARNATION => Err(postcard::Error::SerdeDeCustom),
            State::Suspect => Ok(m),
            State::Down => Ok(Member::new(m.id().clone(), m.incarnation(), State::Suspect)),
        }
    }
}

/// The node a SWIM packet says it is from: it must be the peer the transport authenticated,
/// or a member could speak (and refute, and probe) as any other.
fn sender(packet: &[u8]) -> Result<NodeId, postcard::Error> {
    use foca::Codec;
    Ok(Bounded::default().decode_header(packet)?.src.node)
}

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
    let mut foca = Foca::new(me, config(timing), rng, Bounded::default());
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
            Input::Data(peer, bytes) => match sender(&bytes) {
                Ok(src) if src == peer => foca.handle_data(&bytes, &mut rt),
                Ok(src) => {
                    tracing::debug!(%peer, claimed = %src, "swim packet claiming another sender; dropped");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "swim packet refused");
                    Ok(())
                }
            },
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

#[cfg(test)]
mod tests {
    use foca::{Codec, Header, Message};

    use super::*;

    fn id(seed: u8, generation: u64) -> SwimId {
        SwimId {
            node: NodeId([seed; 32]),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation,
        }
    }

    fn packet(src: SwimId, dst: SwimId, updates: &[Member<SwimId>]) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = Header {
            src,
            src_incarnation: 0,
            dst,
            message: Message::Ping(1),
        };
        Bounded::default().encode_header(&header, &mut buf).unwrap();
        for m in updates {
            Bounded::default().encode_member(m, &mut buf).unwrap();
        }
        buf
    }

    /// [untrusted] 11: a packet is taken as its sender's only (the transport authenticated the
    /// peer; the header names who speaks), and identities from the future — a victim "down"
    /// at generation u64::MAX, which would outrank every later run of it — are refused.
    #[test]
    fn swim_packets_speak_for_their_sender_and_only_of_the_present() {
        let now = weft_net::now_ms();
        let (rogue, victim) = (id(1, now), id(2, now));
        assert_eq!(
            sender(&packet(rogue.clone(), victim.clone(), &[])).unwrap(),
            rogue.node
        );
        // Claiming to be the victim names the victim, which is not the authenticated peer.
        assert_eq!(
            sender(&packet(victim.clone(), rogue.clone(), &[])).unwrap(),
            victim.node
        );
        assert!(sender(&packet(id(1, u64::MAX), victim.clone(), &[])).is_err());
        let doomed = Member::new(id(2, u64::MAX), 7, State::Down);
        let p = packet(rogue.clone(), victim.clone(), std::slice::from_ref(&doomed));
        let mut rest = &p[..];
        Bounded::default().decode_header(&mut rest).unwrap();
        assert!(Bounded::default().decode_member(&mut rest).is_err());
        // The present (and a run started a moment ago on a clock a little ahead) is fine.
        let fine = Member::new(id(2, now + 1_000), 7, State::Alive);
        assert_eq!(decoded(rogue, victim, &fine), Ok(fine));
    }

    /// The one update a packet from `src` to `dst` carries, as this node's codec reads it.
    fn decoded(src: SwimId, dst: SwimId, update: &Member<SwimId>) -> Result<Member<SwimId>, ()> {
        let p = packet(src, dst, std::slice::from_ref(update));
        let mut rest = &p[..];
        let mut codec = Bounded::default();
        codec.decode_header(&mut rest).unwrap();
        codec.decode_member(&mut rest).map_err(|_| ())
    }

    /// [untrusted] 11: "down" is not hearsay. A member's word that another node is down is a
    /// suspicion only (the victim refutes it), and no hearsay may suspect a node at an
    /// incarnation it could not refute; a node may still say it is down itself (leaving).
    #[test]
    fn down_gossip_about_others_is_only_a_suspicion() {
        let now = weft_net::now_ms();
        let (rogue, victim, other) = (id(1, now), id(2, now), id(3, now));
        let down = Member::new(victim.clone(), 4, State::Down);
        let suspect = Member::new(victim.clone(), 4, State::Suspect);
        assert_eq!(
            decoded(rogue.clone(), other.clone(), &down),
            Ok(suspect.clone())
        );
        assert_eq!(decoded(rogue.clone(), other.clone(), &suspect), Ok(suspect));
        // Leaving: the victim's own word about itself stands.
        assert_eq!(decoded(victim.clone(), other.clone(), &down), Ok(down));
        for state in [State::Suspect, State::Down] {
            let unrefutable = Member::new(victim.clone(), Incarnation::MAX, state);
            assert!(decoded(rogue.clone(), other.clone(), &unrefutable).is_err());
        }
        let alive = Member::new(victim.clone(), Incarnation::MAX, State::Alive);
        assert_eq!(decoded(rogue, other, &alive), Ok(alive));
    }
}
