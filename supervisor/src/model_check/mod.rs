//! Integrity at rest at boot and least privilege for workers.
//!
//! - [`child`]: `airlock-init model-check STORE`, started by PID 1 once the
//!   state partition is mounted: store recovery, then the full re-hash of
//!   every active model version against its signed manifest.
//! - [`line`]: the child's output format (PID 1's only input from it).
//! - [`job`]: PID 1's side: start, read, reap, `status`, audit, notices.
//! - [`record`]: this boot's verdict per model (tmpfs), updated by
//!   `activate`, and [`record::worker_model_dir`], the gate of a worker's
//!   model directory.
//! - [`worker_spec`]: the worker's sandbox spec, built on that gate.

pub mod child;
pub mod job;
pub mod line;
pub mod record;
pub mod worker_spec;
