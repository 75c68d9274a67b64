//! Random bytes fed to the fabric's decoders — SWIM (foca), sync and coordinate messages —
//! never panic a node.

use foca::{AccumulatingRuntime, Foca, PostcardCodec};
use proptest::prelude::*;
use weft_core::{NodeId, wire};
use weft_fabric::{CoordMessage, SwimId, SyncRequest, SyncResponse};

fn swim() -> Foca<SwimId, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast> {
    let me = SwimId {
        node: NodeId([1; 32]),
        addr: "127.0.0.1:1".parse().unwrap(),
        generation: 1,
    };
    let rng: rand::rngs::StdRng = rand::make_rng();
    Foca::new(
        me,
        foca::Config::new_lan(std::num::NonZeroU32::new(8).unwrap()),
        rng,
        PostcardCodec,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn swim_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut foca = swim();
        let mut rt = AccumulatingRuntime::new();
        let _ = foca.handle_data(&bytes, &mut rt);
    }

    #[test]
    fn protocol_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = wire::decode::<SyncRequest>(&bytes);
        let _ = wire::decode::<SyncResponse>(&bytes);
        let _ = wire::decode::<CoordMessage>(&bytes);
    }
}

#[test]
fn swim_survives_a_valid_header_with_garbage_behind_it() {
    // A well-formed prefix followed by junk exercises deeper decoder paths than pure noise.
    let mut foca = swim();
    let mut rt = AccumulatingRuntime::new();
    let other = SwimId {
        node: NodeId([2; 32]),
        addr: "127.0.0.1:2".parse().unwrap(),
        generation: 5,
    };
    foca.announce(other, &mut rt).unwrap();
    let (_, packet) = rt.to_send().unwrap();
    for cut in 0..packet.len() {
        let mut bad = packet[..cut].to_vec();
        bad.extend_from_slice(&[0xff; 16]);
        let mut foca = swim();
        let _ = foca.handle_data(&bad, &mut rt);
    }
}
