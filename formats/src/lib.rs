//! Formats shared by the appliance and the host tools.
//!
//! Dependencies point one way: `formats` <- supervisor, worker, cli.
//!
//! - [`manifest`]: the bundle manifest (strict parse, path rules)
//! - [`minisig`]: minisign keys and signatures (prehashed `ED` only)
//! - [`trust`]: trust file, roles, thresholds, root rotation
//! - [`state`]: anti-rollback state
//! - [`pack`]: building and signing bundles (host side), splitting large payloads
//! - [`gguf`]: strict GGUF header reader (architecture, context length, chat template)
//! - [`uki`]: a unified kernel image's `.osrel` (system version, image variant)
//! - [`bundle`]: bundle directory scan and verification
//! - [`stream`]: read-once hash+copy pipeline
//! - [`import`]: streaming import into the store
//! - [`store`]: explicit store creation and state recovery
//! - [`custody`]: installed models: list, activate, rollback, remove, clean-up
//! - [`at_rest`]: an installed model checked against its signed manifest
//! - [`fsutil`]: atomic file replace, directory fsync
//! - [`bounded`]: reading a worker's replies under per-frame, per-job and size limits
//! - [`tasks`]: job templates (summarize, extract, ...) as data, strict parse
//! - [`escape`]: untrusted text made safe for a terminal
//! - [`audit`]: audit log entries, Merkle tree, signed checkpoints, verifier

pub mod at_rest;
pub mod audit;
pub mod bounded;
pub mod bundle;
pub mod custody;
pub mod escape;
pub mod fsutil;
pub mod gguf;
pub mod import;
pub mod manifest;
pub mod minisig;
pub mod pack;
pub mod protocol;
pub mod state;
pub mod store;
pub mod stream;
pub mod tasks;
pub mod trust;
pub mod uki;
