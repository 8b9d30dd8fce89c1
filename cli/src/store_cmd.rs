//! `airlock store init|recover`: the explicit store operations. An install
//! never creates a store nor rebuilds a lost state by itself.

use crate::bundle_cmd::{load_trust, BundleCmdError};
use crate::StoreCmd;
use airlock_formats::custody::{self, CustodyError};
use airlock_formats::escape;
use airlock_formats::store::{self, StoreError};

/// Errors of the store commands; each wraps the failing step's error.
#[derive(Debug, thiserror::Error)]
pub enum StoreCmdError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Trust(#[from] BundleCmdError),
    #[error("{0}")]
    Custody(#[from] CustodyError),
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
        StoreCmd::Models { store } => (|| {
            for m in custody::models(&store)? {
                println!("model {}", escape::text(&m.name));
                for v in &m.versions {
                    let signers: Vec<String> = v
                        .signers
                        .iter()
                        .map(|s| format!("{} ({})", escape::text(&s.name), escape::text(&s.key_id)))
                        .collect();
                    println!(
                        "  version {}{}: {} bytes; signed by {}; imported {} by {}; manifest sha256 {}{}{}",
                        v.version,
                        if v.active { " (active)" } else { "" },
                        v.size,
                        if signers.is_empty() { "unknown".into() } else { signers.join(", ") },
                        escape::text(v.imported_at.as_deref().unwrap_or("unknown")),
                        escape::text(v.imported_by.as_deref().unwrap_or("unknown")),
                        escape::text(&v.manifest_sha256),
                        if v.used { "; has run a job" } else { "" },
                        v.kept.as_deref().map(|k| format!("; {k}")).unwrap_or_default(),
                    );
                }
            }
            Ok(())
        })(),
    };
    r.map_err(|e| e.to_string())
}
