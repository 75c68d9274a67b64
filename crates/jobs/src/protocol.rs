//! The job protocol between nodes (`proto::JOB`, members only): a coordinator offers an
//! attempt to runners, starts it on the one that reserved room for it, hands a job to its
//! standby, and reads a running job's logs from its runner.
//!
//! The job's capability (the client's narrow session) travels only to the node that starts the
//! attempt and to the standby: an offer names the resources and nothing that acts for the
//! account, and a log read carries the reader's delegation without its secret or keys — enough
//! for the runner to check who asks, nothing to act with.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_compute::schema::Placement;
use weft_core::{NodeId, proto};
use weft_net::Rpc;

use crate::{JobKey, JobService};

/// The most log bytes one read returns.
pub const LOG_CHUNK: u64 = 1 << 20;

/// The job protocol (`proto::JOB`).
pub const JOB_RPC: Rpc<JobAsk, JobAnswer> = Rpc::new(
    proto::JOB,
    256 << 10,
    (LOG_CHUNK as usize) + 4096,
    Duration::from_secs(30),
);

/// Serve the job protocol for `svc` (while it lives: the handler holds it weakly).
pub(crate) fn register(svc: &JobService) {
    let weak = Arc::downgrade(&svc.inner);
    JOB_RPC.serve(&svc.inner.endpoint, false, move |peer, ask| {
        let weak = weak.clone();
        async move {
            let Some(inner) = weak.upgrade() else {
                return JobAnswer::Refused("the node is stopping".into());
            };
            let weft_net::Peer::Member(peer) = peer else {
                return JobAnswer::Refused("jobs are between members".into());
            };
            JobService { inner }.answer(peer.id, ask).await
        }
    });
}

/// Questions of the job protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum JobAsk {
    /// Reserve room for attempt `attempt` of a job that needs `cpu_milli` and `memory` bytes,
    /// for a moment ([`crate::run::HOLD`]): the runner reserves it or refuses.
    Offer {
        /// The job.
        key: JobKey,
        /// Which attempt.
        attempt: u32,
        /// Milli-cores it needs.
        cpu_milli: u32,
        /// Bytes of memory it needs.
        memory: u64,
    },
    /// Start the attempt this node reserved room for, with the job's capability (the runner
    /// claims the job's lease or refuses).
    Start {
        /// The job.
        key: JobKey,
        /// Which attempt.
        attempt: u32,
        /// The job's capability (its owner's narrow session).
        session: String,
        /// Why the coordinator chose this node.
        placement: Placement,
    },
    /// Watch a job as its standby coordinator.
    Watch {
        /// The job.
        key: JobKey,
        /// The job's capability.
        session: String,
    },
    /// Read a running job's stdout (or stderr) from `offset`, for the reader whose session,
    /// stripped of its secret and keys ([`weft_data::Session::public_part`]), is `session`.
    Logs {
        /// The job.
        key: JobKey,
        /// The reader's public session.
        session: String,
        /// Stderr rather than stdout.
        stderr: bool,
        /// From this byte.
        offset: u64,
    },
}

/// Answers of the job protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum JobAnswer {
    /// The runner reserved room for the attempt.
    Reserved,
    /// The runner claimed the attempt.
    Admitted,
    /// Not taken, and why.
    Refused(String),
    /// The standby watches the job.
    Watching,
    /// Log bytes, and whether the job still runs.
    Logs {
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether the job still runs.
        running: bool,
    },
}

impl JobService {
    /// Answer `peer`'s question.
    pub(crate) async fn answer(&self, peer: NodeId, ask: JobAsk) -> JobAnswer {
        // A key from a peer names rows, folders and logs: check it before anything else.
        let key = match &ask {
            JobAsk::Offer { key, .. }
            | JobAsk::Start { key, .. }
            | JobAsk::Watch { key, .. }
            | JobAsk::Logs { key, .. } => key,
        };
        if let Err(e) = key.check() {
            return JobAnswer::Refused(e.to_string());
        }
        match ask {
            JobAsk::Offer {
                key,
                attempt,
                cpu_milli,
                memory,
            } => match self.reserve(peer, &key, attempt, cpu_milli, memory) {
                Ok(()) => JobAnswer::Reserved,
                Err(why) => JobAnswer::Refused(why),
            },
            JobAsk::Start {
                key,
                attempt,
                session,
                placement,
            } => match self.admit(&key, attempt, &session, placement).await {
                Ok(()) => JobAnswer::Admitted,
                Err(why) => JobAnswer::Refused(why),
            },
            JobAsk::Watch { key, session } => self.stand_by(peer, key, session),
            JobAsk::Logs {
                key,
                session,
                stderr,
                offset,
            } => match self.local_logs(&key, &session, stderr, offset).await {
                Ok((bytes, running)) => JobAnswer::Logs { bytes, running },
                Err(e) => JobAnswer::Refused(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_core::wire::{self, hostile};

    use super::*;

    /// Structured hostile input for the job protocol (any member may ask, any runner answers):
    /// valid questions and answers with a length or a count rewritten to something huge at
    /// every position, and every truncation. Each answers at once.
    #[test]
    fn job_questions_and_answers_refuse_huge_claims_cheaply() {
        let key = JobKey {
            owner: NodeId([1; 32]),
            bucket: "out".into(),
            id: "0000019a2b3c4d5e".into(),
        };
        let placement = Placement {
            runner: NodeId([2; 32]),
            score: 0.5,
            local_bytes: 10,
            site_bytes: 20,
            remote_bytes: 30,
            transfer_ms: 4,
            candidates: 3,
            filtered: "1 not compute".into(),
            refused: vec![(NodeId([3; 32]), "busy".into())],
        };
        let asks = [
            JobAsk::Offer {
                key: key.clone(),
                attempt: 1,
                cpu_milli: 500,
                memory: 64 << 20,
            },
            JobAsk::Start {
                key: key.clone(),
                attempt: 1,
                session: "weft-session1-abc".into(),
                placement,
            },
            JobAsk::Logs {
                key,
                session: "weft-session1-abc".into(),
                stderr: false,
                offset: 9,
            },
        ];
        let answers = [
            JobAnswer::Refused("busy".into()),
            JobAnswer::Logs {
                bytes: vec![7; 100],
                running: true,
            },
        ];
        let quick = Duration::from_millis(200);
        for ask in &asks {
            let slowest = hostile::slowest::<JobAsk>(&wire::encode(ask));
            assert!(slowest < quick, "{ask:?}: {slowest:?}");
        }
        for answer in &answers {
            let slowest = hostile::slowest::<JobAnswer>(&wire::encode(answer));
            assert!(slowest < quick, "{answer:?}: {slowest:?}");
        }
    }
}
