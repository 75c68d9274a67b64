//! Compute: WebAssembly jobs in a sandbox ([`runtime`]), where to run them ([`schedule`]),
//! and the transitions of a job's life that make one run and one result ([`lease`]).

pub mod lease;
pub mod runtime;
pub mod schedule;
