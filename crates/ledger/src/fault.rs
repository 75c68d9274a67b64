//! Proof of a wrong result: a node's own signed receipt for a run of a job, beside the
//! receipts of at least [`MIN_AGREEING`] other nodes for runs of the same job — the same
//! request — that all signed one other result. Anyone can check a fault from its receipts
//! alone, so whoever stores it, and whatever row it arrives in, only a fault that checks counts.
//!
//! It proves disagreement with a majority of distinct nodes, not who computed what: framing an
//! honest node takes [`MIN_AGREEING`] colluding members that ran the same job.
//!
//! Faults are kept in the table (`lf/<offender>`, [`Faults`]), named by the wrong receipt's
//! hash, and count against the offender's reputation (`weft-heal`).

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};
use weft_meta::{MetaError, Rules, Schema, Table, Writer, row_kind};

use crate::receipt::{Receipt, Work};

/// Distinct other nodes whose receipts must agree against the offender's.
pub const MIN_AGREEING: usize = 2;
/// The most agreeing receipts a fault carries (a quorum is at most 9 runs).
pub const MAX_AGREEING: usize = 8;
/// The most fault rows read per node.
pub const MAX_READ: usize = 256;

/// A proven wrong result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The offender's receipt.
    pub wrong: Receipt,
    /// Receipts of other nodes for the same job, all signing one other result.
    pub agreeing: Vec<Receipt>,
}

/// Why a fault does not prove anything.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// A receipt's signature does not verify.
    #[error("a receipt of the fault does not verify")]
    BadSignature,
    /// A receipt is not of a job run.
    #[error("a receipt of the fault is not of a job run")]
    NotAJob,
    /// The receipts are of different jobs or requests.
    #[error("the receipts are of different jobs")]
    OtherJob,
    /// Too few or too many agreeing receipts, or not from distinct other nodes.
    #[error("a fault needs {MIN_AGREEING} to {MAX_AGREEING} receipts of distinct other nodes")]
    Agreeing,
    /// The agreeing receipts do not sign one result, or sign the offender's.
    #[error("the agreeing receipts do not sign one result other than the offender's")]
    NoDisagreement,
}

/// The job, request and result a receipt of a job run signs.
fn job_of(r: &Receipt) -> Result<(&str, ContentHash, ContentHash), FaultError> {
    if !r.verifies() {
        return Err(FaultError::BadSignature);
    }
    match &r.body.work {
        Work::Job { job, result, .. } => Ok((job.as_str(), r.body.request, *result)),
        _ => Err(FaultError::NotAJob),
    }
}

impl Fault {
    /// Check the proof; the offender if it holds.
    pub fn check(&self) -> Result<NodeId, FaultError> {
        let (job, request, wrong) = job_of(&self.wrong)?;
        let offender = self.wrong.body.node;
        if !(MIN_AGREEING..=MAX_AGREEING).contains(&self.agreeing.len()) {
            return Err(FaultError::Agreeing);
        }
        let mut nodes: Vec<NodeId> = Vec::new();
        let mut right: Option<ContentHash> = None;
        for r in &self.agreeing {
            let (j, q, result) = job_of(r)?;
            if j != job || q != request {
                return Err(FaultError::OtherJob);
            }
            let node = r.body.node;
            if node == offender || nodes.contains(&node) {
                return Err(FaultError::Agreeing);
            }
            nodes.push(node);
            if result == wrong || right.is_some_and(|h| h != result) {
                return Err(FaultError::NoDisagreement);
            }
            right = Some(result);
        }
        Ok(offender)
    }

    /// Its row's sort key: the wrong receipt's hash.
    pub fn key(&self) -> String {
        self.wrong.hash().to_hex()
    }
}

row_kind! {
    /// Proven wrong results, by offender.
    pub struct Faults {
        kind: "lf",
        writer: Writer::FirstClaim,
        part: NodeId,
        sort: str,
        value: Fault,
        partition: |node| node.to_hex(),
    }
}

/// Declare the fault rows.
pub fn register(rules: &mut Rules) {
    rules.add(Faults::KIND, Faults::WRITER);
}

/// Keep `fault` in the table (once; its key names its content). Refused unless it checks.
pub async fn report(
    table: &Table,
    signer: impl Into<weft_meta::Signer>,
    fault: &Fault,
) -> Result<NodeId, ReportError> {
    let offender = fault.check()?;
    match table
        .create::<Faults>(signer, &offender, &fault.key(), fault)
        .await
    {
        Ok(_) => Ok(offender),
        Err(MetaError::Conflict) => Ok(offender),
        Err(e) => Err(e.into()),
    }
}

/// Why a fault was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// It proves nothing.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// The table did not take it.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The proven faults of `node` (rows that do not check, or name another offender or key, are
/// skipped).
pub async fn faults_of(table: &Table, node: &NodeId) -> Result<Vec<Fault>, MetaError> {
    let rows = table.list::<Faults>(node, "").await?;
    Ok(rows
        .into_iter()
        .take(MAX_READ)
        .filter_map(|(key, row)| row.known().map(|f| (key, f)))
        .filter(|(key, f)| *key == f.key() && f.check().ok() == Some(*node))
        .map(|(_, f)| f)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{RECEIPT_FORMAT, ReceiptBody};
    use weft_core::SecretKey;

    fn run(seed: u8, job: &str, result: u8) -> Receipt {
        let key = SecretKey::from_seed([seed; 32]);
        Receipt::sign(
            &key,
            ReceiptBody {
                format: RECEIPT_FORMAT,
                node: key.public(),
                seq: 0,
                prev: ContentHash([0; 32]),
                at_ms: 1,
                account: SecretKey::from_seed([99; 32]).public(),
                request: ContentHash::of(job.as_bytes()),
                work: Work::Job {
                    job: job.into(),
                    attempt: u32::from(seed),
                    module: ContentHash([1; 32]),
                    result: ContentHash([result; 32]),
                    fuel: 10,
                    bytes_in: 0,
                    bytes_out: 0,
                    wall_ms: 1,
                    exit: Some(0),
                },
            },
        )
    }

    #[test]
    fn a_fault_proves_only_a_disagreement_with_distinct_others() {
        let good = Fault {
            wrong: run(1, "b/1", 7),
            agreeing: vec![run(2, "b/1", 8), run(3, "b/1", 8)],
        };
        assert_eq!(good.check(), Ok(SecretKey::from_seed([1; 32]).public()));

        let one = Fault {
            agreeing: vec![run(2, "b/1", 8)],
            ..good.clone()
        };
        assert_eq!(one.check(), Err(FaultError::Agreeing));
        let same_node = Fault {
            agreeing: vec![run(2, "b/1", 8), run(2, "b/1", 8)],
            ..good.clone()
        };
        assert_eq!(same_node.check(), Err(FaultError::Agreeing));
        let self_vouching = Fault {
            agreeing: vec![run(1, "b/1", 8), run(3, "b/1", 8)],
            ..good.clone()
        };
        assert_eq!(self_vouching.check(), Err(FaultError::Agreeing));
        let other_job = Fault {
            agreeing: vec![run(2, "b/1", 8), run(3, "b/2", 8)],
            ..good.clone()
        };
        assert_eq!(other_job.check(), Err(FaultError::OtherJob));
        let split = Fault {
            agreeing: vec![run(2, "b/1", 8), run(3, "b/1", 9)],
            ..good.clone()
        };
        assert_eq!(split.check(), Err(FaultError::NoDisagreement));
        let agrees = Fault {
            agreeing: vec![run(2, "b/1", 7), run(3, "b/1", 7)],
            ..good.clone()
        };
        assert_eq!(agrees.check(), Err(FaultError::NoDisagreement));
        let mut forged = good.clone();
        if let Work::Job { result, .. } = &mut forged.agreeing[1].body.work {
            *result = ContentHash([8; 32]);
        }
        forged.agreeing[0].body.at_ms = 2;
        assert_eq!(forged.check(), Err(FaultError::BadSignature));
    }
}
