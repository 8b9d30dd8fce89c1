//! Worker protocol: versioned, length-prefixed serde frames between the
//! supervisor and the sandboxed inference worker.
