//! Local fabrics, the one way tests and benchmarks make them.
//!
//! - [`inproc`]: a [`Builder`] for N real nodes in this process (QUIC on loopback, real
//!   stores), in named sites and regions, with WAN emulation between sites if asked, admitted
//!   by invite like any node; a [`Cluster`] with wait-for helpers, stop and restart of a node on
//!   its own data directory, and an account ready to act through any node.
//! - [`process`]: node processes of the real `weft` binary — spawn one, find its pid, wait for
//!   its API, wait until a set of them converged, stop them all — the machinery `weft up`
//!   itself runs on.
//! - [`local`]: a [`LocalFabric`] made by `weft up` (the same command a newcomer runs), with
//!   its nodes' API clients, kill and restart; and [`cli`]: the binary run as a person would,
//!   each [`User`] with their own accounts.
//! - [`rogue`]: a [`Rogue`] member for attack tests — honest code, plus rows signed and
//!   requests sent at will; [`attacks`]: its campaign of every attack at once, which the
//!   `weft-rogue` binary runs against a real fabric.
//!
//! In the spirit of Quickwit's cluster sandbox: every integration test and every `weft bench`
//! starts its fabric here, so a change to how nodes are set up is made once.
//!
//! **Invariant:** only test and benchmark setup lives here — no behaviour of a node; a node
//! started here is started exactly as `weft run` starts it.

#![deny(missing_docs)]

pub mod attacks;
pub mod cli;
pub mod inproc;
pub mod local;
pub mod process;
pub mod rogue;

use std::time::{Duration, Instant};

pub use cli::User;
pub use inproc::{Builder, Cluster, cluster};
pub use local::{LocalFabric, UpOptions};
pub use rogue::Rogue;

/// Wait (on this thread) until `cond` holds, checking every 100 ms; panics after `timeout`
/// naming `what`. Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Wait (in async code) until `done` holds, checking every 100 ms; panics after `secs`
/// seconds naming `what`.
pub async fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session of `account` over the whole account for ten minutes, as a client opens one.
pub fn session(account: &weft_core::SecretKey) -> String {
    weft_data::Session::new(
        account,
        weft_core::Scope::Account,
        true,
        weft_net::now_ms(),
        600_000,
        &[],
    )
    .to_text()
}

/// Wait up to a minute for job `reference` (`BUCKET/ID`) to end — done, failed or cancelled —
/// as `session` sees it through `node`; its status.
pub async fn job_ended(
    node: &weft_node::Node,
    session: &str,
    reference: &str,
) -> weft_jobs::JobStatus {
    let (bucket, id) = reference
        .split_once('/')
        .expect("a job reference is BUCKET/ID");
    for _ in 0..600 {
        let s = node
            .jobs()
            .status(session, bucket, id)
            .await
            .expect("the job's status");
        if matches!(s.state.as_str(), "done" | "failed" | "cancelled") {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {reference} did not end within a minute");
}

/// `len` bytes of a fixed pattern (compressible data is fine: weft encrypts before coding).
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
