//! Compute: WebAssembly jobs in a sandbox ([`runtime`]), where to run them ([`schedule`]),
//! the transitions of a job's life that make one run and one result ([`lease`]), and job
//! specs ([`spec`]).

pub mod lease;
pub mod runtime;
pub mod schedule;
pub mod spec;
