//! What can go wrong with jobs: the service's operations ([`JobError`]) and one run
//! ([`RunnerError`]).

use weft_compute::runtime::RunError;
use weft_data::{BucketError, SessionError};
use weft_meta::MetaError;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The spec does not validate.
    #[error(transparent)]
    Spec(#[from] weft_compute::spec::SpecError),
    /// The session does not open.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A bucket or object problem (authorization included).
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// No such job.
    #[error("no job {0} (see `weft job ls`)")]
    NoJob(String),
    /// A job reference that is not `BUCKET/ID`.
    #[error("{0:?} is not a job id: jobs are named BUCKET/ID, as `weft job run` printed")]
    BadId(String),
    /// It cannot run anywhere: the residency of its data and spec leave no place.
    #[error("the job can run nowhere: {0}")]
    Nowhere(String),
    /// The change does not apply to the job as it is.
    #[error("{0}")]
    Refused(String),
    /// The table failed.
    #[error("job table: {0}")]
    Table(#[from] MetaError),
    /// The session can only read.
    #[error("this session is read-only; submitting or cancelling a job needs one that signs")]
    ReadOnly,
    /// The account's credits do not cover what the job may cost.
    #[error("{0}")]
    Credits(String),
    /// The ledger could not say what the account has.
    #[error("ledger: {0}")]
    Ledger(#[from] weft_ledger::LedgerError),
}

/// Why a job did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A bucket or object failure (including authorization).
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// The sandbox ended it.
    #[error(transparent)]
    Run(#[from] RunError),
    /// An input that cannot be mounted: a key that cannot be a path, or a local file.
    #[error(
        "input {0:?} cannot be mounted as a file (a local file, or empty, '.' or '..' segments)"
    )]
    BadInputKey(String),
    /// The job's directory.
    #[error("job directory: {0}")]
    Io(#[from] std::io::Error),
}
