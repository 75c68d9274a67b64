//! Compute: WebAssembly jobs in a sandbox ([`runtime`]), where to run them ([`schedule`]),
//! the transitions of a job's life that make one run and one result ([`lease`]), job specs
//! ([`spec`]), pipelines of jobs ([`pipeline`]), the job rows of the metadata table
//! ([`schema`]) and the decision of verified results ([`verify`]).

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod lease;
pub mod pipeline;
pub mod runtime;
pub mod schedule;
pub mod schema;
pub mod spec;
pub mod verify;
