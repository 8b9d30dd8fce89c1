//! `airlock store init|recover`: the explicit store operations. An install
//! never creates a store nor rebuilds a lost state by itself.

use crate::bundle_cmd::{load_trust, BundleCmdError};
use crate::StoreCmd;
use airlock_formats::escape;
use airlock_formats::store::{self, StoreError};

/// Errors of the store commands; each wraps the failing step's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreCmdError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Trust(#[from] BundleCmdError),
}

pub fn run(cmd: StoreCmd) -> Result<(), String> {
    let r: Result<(), StoreCmdError> = match cmd {
        StoreCmd::Init { store } => (|| {
            store::init(&store)?;
            println!("initialised empty store {}", escape::path(&store));
            Ok(())
        })(),
        StoreCmd::Recover { store, trust } => (|| {
            let trust = load_trust(&trust)?;
            let r = store::recover(&store, &trust)?;
            for (kind, name, version, sha) in &r.recorded {
                println!(
                    "recorded {kind} {} version {version} (manifest sha256 {sha})",
                    escape::text(name)
                );
            }
            for (dir, why) in &r.skipped {
                // `why` is built from escaped names.
                println!("skipped {}: {why}", escape::path(dir));
            }
            println!(
                "recovered state of {}: {} recorded, {} skipped",
                escape::path(&store),
                r.recorded.len(),
                r.skipped.len()
            );
            Ok(())
        })(),
    };
    r.map_err(|e| e.to_string())
}
