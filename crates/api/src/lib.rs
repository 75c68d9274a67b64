//! The node's local HTTP JSON API and the client the CLI uses to talk to it.
//!
//! The API listens on loopback by default and every request must carry the bearer token stored
//! in the node's data directory (`api.token`, mode 0600), so only the node's operator can use
//! it. Errors map, in one place, to an HTTP status and a JSON `{"error": "..."}` body.
//!
//! It knows the node's public operations and nothing of QUIC, SWIM or storage internals.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod audit;
mod buckets;
mod client;
mod errors;
mod jobs;
mod keys;
mod ledger;
mod members;
mod models;
mod objects;
mod server;
mod state;

pub use audit::{
    AuditParams, AuditReport, JobAudit, ObjectAudit, ObjectsAudit, ShardAudit, job_audit,
    object_findings, paid_job,
};
pub use buckets::{CreateBucket, ListedObject, Revoked};
pub use client::{ApiClient, ApiError, path_escape, url_escape};
pub use jobs::{ListJobs, LogChunk, LogsQuery};
pub use keys::CreateKey;
pub use ledger::PrepayRequest;
pub use members::MemberStatus;
pub use models::{AddModel, PlaceModel};
pub use objects::{PutAnswer, PutQuery};
pub use server::serve;
pub use state::SESSION_HEADER;
pub use weft_inference::{ModelListing, ModelReplica};

use serde::{Deserialize, Serialize};

/// File in the data directory holding the API's address.
pub const API_ADDR_FILE: &str = "api.addr";

/// `POST /v1/invites` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InviteParams {
    /// Site to certify (empty: the joiner declares it).
    #[serde(default)]
    pub site: String,
    /// Region to certify.
    #[serde(default)]
    pub region: String,
    /// Jurisdiction to certify.
    #[serde(default)]
    pub jurisdiction: String,
    /// Roles (empty: storage + compute).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

/// `POST /v1/invites` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InviteAnswer {
    /// The invite text.
    pub invite: String,
    /// Unix ms expiry.
    pub expires_at: u64,
}

/// `PUT /v1/fabric/accounts` body: open the fabric to any account, or make it invite-only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountsParams {
    /// Only accounts the admin admitted may act on buckets.
    pub invite_only: bool,
}

/// `PUT /v1/fabric/quotas/{default|account}` body (`None`: no limit).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QuotaParams {
    /// Bytes stored.
    pub bytes: Option<u64>,
    /// Jobs queued or running at once.
    pub jobs: Option<u32>,
    /// AI tokens in any minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// The free allowance, micro-credits (`None`: the fabric's default).
    #[serde(default)]
    pub allowance: Option<u64>,
}

/// `GET /v1/ledger` answer: where the fabric's ledger stands on the node, its newest cosigned
/// checkpoint, and the members whose signatures count (to check it with).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerView {
    /// The node's view of the ledger.
    pub status: weft_ledger::LedgerStatus,
    /// The newest checkpoint cosigned by a quorum (a C2SP signed note).
    pub checkpoint: Option<String>,
    /// Current members (hex ids), revoked and departed ones aside.
    pub members: Vec<String>,
}

/// `POST /v1/ledger/grants` (operator, on an admin node): credits for an account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The account (hex).
    pub account: String,
    /// Credits (fractions allowed, to the micro-credit).
    pub credits: f64,
    /// Why.
    #[serde(default)]
    pub memo: String,
}

/// What `POST /v1/ledger/grants` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantAnswer {
    /// The account (hex).
    pub account: String,
    /// The grant's id.
    pub id: String,
    /// Micro-credits granted.
    pub micro: u64,
}

/// One line of an account's credit history (`GET /v1/ledger/history`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryLine {
    /// Unix ms.
    pub at_ms: u64,
    /// `grant`, `job`, `inference`, `storage` or `transfer`.
    pub kind: String,
    /// What: the grant's memo, the job, the model, ….
    pub what: String,
    /// Micro-credits: positive for a grant, negative for a charge.
    pub amount: i128,
    /// The node that charged it (hex), for a receipt.
    pub node: Option<String>,
    /// Its index in the log, for a receipt.
    pub index: Option<u64>,
}

/// `GET /v1/ledger/receipts` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReceiptsParams {
    /// Skip this many of the account's receipts.
    pub skip: Option<usize>,
    /// At most this many (1000 at most).
    pub max: Option<usize>,
}

/// One receipt of `GET /v1/ledger/receipts`, as the log holds it, with its inclusion proof.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptProof {
    /// The log entry (the signed receipt), hex.
    pub entry: String,
    /// Its index in the log.
    pub index: u64,
    /// The inclusion proof's hashes, hex, leaf first.
    pub proof: Vec<String>,
    /// The cosigned checkpoint the proof is against.
    pub checkpoint: String,
}

/// `GET /v1/ledger/consistency` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConsistencyParams {
    /// The older size.
    pub old: u64,
    /// The newer size.
    pub new: u64,
}

/// `GET /v1/ledger/consistency` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The proof's hashes, hex.
    pub proof: Vec<String>,
}

/// `GET /v1/usage` answer: what the acting account stores and the quota that applies to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsageAnswer {
    /// The account (hex).
    pub account: String,
    /// Bytes it stores (every kept version and uploaded part, at plaintext size).
    pub stored_bytes: u64,
    /// Its quota of bytes (`None`: no limit).
    pub quota_bytes: Option<u64>,
    /// Its quota of jobs queued or running (`None`: no limit).
    pub quota_jobs: Option<u32>,
}

/// `PUT` / `DELETE /v1/fabric/accounts/{id}` answer: the account admitted or dismissed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdmittedAccount {
    /// Its id (hex).
    pub account: String,
    /// Admitted (true) or dismissed.
    pub admitted: bool,
}

/// `POST /v1/revoke` body and answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeParams {
    /// Node id or unique prefix.
    pub node: String,
}

/// `PUT /v1/wan` body: the node's emulated wide-area links from now on (replacing the
/// previous ones). A loss of 100% on every link from a site cuts it off.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WanParams {
    /// `a-b=DELAY[:JITTER[:LOSS%]]` items, comma separated; empty for no delay.
    #[serde(default)]
    pub links: String,
    /// Loss on every datagram the node sends, e.g. `5%`.
    #[serde(default)]
    pub loss: Option<String>,
}

/// Error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}
