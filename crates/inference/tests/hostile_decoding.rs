//! Structured hostile input for the `INFER` stream (an entry's request to a replica, the
//! replica's frames back — either side may be any member): valid messages with a length or a
//! count rewritten to something huge at every position, and every truncation
//! (`weft_core::wire::hostile`). Each answers at once.

use std::time::Duration;

use weft_core::wire::{self, hostile};
use weft_inference::{Allowed, ChatRole, Finish, Frame, Params, Request, Work};

/// Slower than this is allocating or looping on what a peer only declared.
const QUICK: Duration = Duration::from_millis(200);

#[test]
fn requests_and_frames_refuse_huge_claims_cheaply() {
    let params = Params {
        max_tokens: Some(64),
        stop: vec!["\n\n".into(), "END".into()],
        ..Params::default()
    };
    let allowed = Allowed {
        regions: vec!["eu".into()],
        jurisdictions: vec!["DE".into()],
    };
    let chat = Request {
        model: "smollm2".into(),
        work: Work::Chat {
            messages: vec![
                (ChatRole::System, "be brief".into()),
                (ChatRole::User, "hello there".into()),
            ],
            params,
        },
        allowed: allowed.clone(),
        account: weft_core::NodeId([7; 32]),
    };
    let embed = Request {
        model: "minilm".into(),
        work: Work::Embed {
            inputs: vec!["one".into(), "two three".into()],
        },
        allowed,
        account: weft_core::NodeId([8; 32]),
    };
    let frames = [
        Frame::Admitted {
            queued: 1,
            capacity: 4,
        },
        Frame::Piece("a piece of text".into()),
        Frame::Embedded {
            vectors: vec![vec![0.5; 8], vec![0.25; 8]],
            tokens: 9,
        },
        Frame::Done {
            finish: Finish::Stop,
            prompt_tokens: 12,
            completion_tokens: 30,
        },
    ];
    let mut checks = vec![
        ("chat", hostile::slowest::<Request>(&wire::encode(&chat))),
        ("embed", hostile::slowest::<Request>(&wire::encode(&embed))),
    ];
    for f in &frames {
        checks.push(("frame", hostile::slowest::<Frame>(&wire::encode(f))));
    }
    for (what, slowest) in checks {
        assert!(
            slowest < QUICK,
            "{what}: a hostile variant took {slowest:?}"
        );
    }
}
