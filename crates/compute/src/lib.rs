//! Compute: WebAssembly jobs in a sandbox, and where to run them.
pub mod runtime;
pub mod schedule;
