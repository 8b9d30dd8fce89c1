//! The audit log: one writer on the appliance, verified on the host.
//!
//! - [`entry`]: one entry, its strict parse and canonical line (the leaf)
//! - [`merkle`]: RFC 6962 tree, roots, inclusion and consistency proofs
//! - [`note`]: C2SP signed notes with Ed25519 (key id, verifier keys)
//! - [`checkpoint`]: C2SP tlog-checkpoint body with a time line
//! - [`layout`]: segment files, checkpoint files, export layout
//! - [`writer`]: append with fsync, signed checkpoints, pruning, export
//! - [`job`]: the layout of a job entry (input, model, answer, task)
//! - [`receipt`]: entry + checkpoint + inclusion proof (C2SP tlog-proof)
//! - [`verify`]: the host verifier and `--since`
//! - [`compare`]: two exports compared (forks)
//!
//! The format is documented in docs/audit.md.

pub mod checkpoint;
pub mod compare;
pub mod entry;
pub mod job;
pub mod layout;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod receipt_tests;
#[cfg(test)]
mod tests;
