//! weft's transport: the node key on disk, mutually authenticated QUIC between fabric members,
//! a router that hands each stream or datagram to the protocol it names, and an opt-in WAN
//! emulator that gives emulated sites their own latency and loss.
//!
//! Admission is enforced here, once, for every protocol: a peer's TLS certificate must carry a
//! membership certificate for this fabric, signed by its admin key, bound to the very key that
//! completed the handshake, unexpired and unrevoked. Anything else fails the handshake. The only
//! exception is a *guest* (a node that is joining and has no certificate yet): it may open
//! streams of protocols registered as guest-accessible, and nothing else.
//!
//! This crate knows nothing about what protocols do — membership, storage and jobs register
//! handlers under numbers they choose — and nothing about configuration files or the CLI.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod endpoint;
mod framing;
mod identity;
mod rpc;
mod tls;
mod trust;
pub mod wan;

pub use endpoint::{
    BoxFuture, DatagramHandler, Endpoint, EndpointConfig, Joined, MAX_GUEST_CONNECTIONS, NetError,
    Peer, RevocationHandler, StreamHandler, WIRE_VERSION, open_on, splice,
};
pub use framing::{read_message, write_message};
pub use identity::{KeyFileError, load_or_create_key, write_secret_file};
pub use rpc::{Rpc, RpcError};
pub use tls::{MEMBERSHIP_EXTENSION_OID, peer_from_certificate};
pub use trust::{PeerInfo, Trust};
pub use wan::{LinkSpec, SiteMap, WanConfig};

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
