//! Random bytes fed to every wire decoder in this crate yield a value or an error, never a panic.

use proptest::prelude::*;
use weft_core::wire;
use weft_core::{Invite, MembershipCert, NodeRecord, Revocation};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn documents_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wire::decode::<Invite>(&bytes);
        let _ = wire::decode::<MembershipCert>(&bytes);
        let _ = wire::decode::<Revocation>(&bytes);
        let _ = wire::decode::<NodeRecord>(&bytes);
    }

    #[test]
    fn invite_text_parses_or_fails(text in ".{0,300}") {
        let _ = Invite::from_text(&text);
        let _ = Invite::from_text(&format!("weft1-{text}"));
    }

    #[test]
    fn frame_and_stream_headers_never_panic(header in any::<[u8; 4]>(), stream in any::<[u8; 7]>(), max in 0usize..(1 << 24)) {
        if let Ok(len) = wire::frame_len(header, max) {
            prop_assert!(len <= max);
        }
        let _ = wire::parse_stream_header(stream);
    }

    #[test]
    fn mutated_valid_documents_never_verify_wrongly(flip in 0usize..400, bit in 0u8..8) {
        let admin = weft_core::SecretKey::from_seed([1; 32]);
        let fabric = weft_core::FabricId::from_admin_key(&admin.public());
        let node = weft_core::SecretKey::from_seed([2; 32]).public();
        let cert = MembershipCert::issue(&admin, weft_core::CertBody {
            fabric, node,
            placement: weft_core::Placement { site: "s".into(), region: "r".into(), jurisdiction: "DE".into() },
            roles: weft_core::Role::defaults(),
            issued_at: 0, expires_at: 10,
        });
        let mut bytes = wire::encode(&cert);
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(mutated) = wire::decode::<MembershipCert>(&bytes) {
            // Any change to a signed certificate must be caught by verification.
            prop_assert!(mutated == cert || mutated.verify(fabric, &admin.public(), &mutated.body.node, 5).is_err());
        }
    }
}
