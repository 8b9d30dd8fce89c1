//! The OpenPGP core of operator jobs (issue 11): what comes in on a stick
//! is opened, what goes back is sealed. Split like gpg-agent (see
//! docs/documents.md):
//! - `packets`: cut the leading session-key packets off a message (runs
//!   with the document, in the `open` sandbox)
//! - `unwrap`: session-key packets + the appliance's secret key → session
//!   key (the key-holding process; it never sees the document body)
//! - `open`: ciphertext + session key → UTF-8 plaintext (sandboxed, never
//!   holds the secret key)
//! - `seal`: answer → signed and encrypted message for the admin recipients
//! - `recipients`: the admin recipients' public keys from a directory
//! - `secret`: the zeroizing session-key and plaintext types
//! - `frame`: bytes in and out over a pipe between the two halves
//! - `guard`: a panic in rPGP becomes a refusal
//! - `child`: `airlock-init doc-open`, the sandboxed opener

pub mod child;
pub mod frame;
pub mod guard;
pub mod open;
pub mod packets;
pub mod recipients;
pub mod seal;
pub mod secret;
pub mod unwrap;

/// Largest ciphertext a job reads by default (policy value).
pub const DEFAULT_MAX_CIPHERTEXT: usize = 64 << 20;
/// Largest plaintext a job accepts after decompression by default.
pub const DEFAULT_MAX_PLAINTEXT: usize = 64 << 20;
