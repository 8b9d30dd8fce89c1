//! `airlock trust init|add-key|set-threshold|bump|sign|verify`.

use crate::bundle_cmd::{load_trust, BundleCmdError};
use crate::keys::{self, KeyError};
use crate::TrustCmd;
use airlock_formats::escape;
use airlock_formats::fsutil::{write_atomic, FsError};
use airlock_formats::minisig;
use airlock_formats::pack::{self, PackSignError};
use airlock_formats::trust::{Candidate, Role, TrustError, TrustFile};
use std::path::{Path, PathBuf};

/// Errors of the trust commands; each names the failing step.
#[derive(Debug, thiserror::Error)]
pub enum TrustCmdError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Load(#[from] BundleCmdError),
    #[error("{0}")]
    Trust(#[from] TrustError),
    #[error("{0}")]
    Write(#[from] FsError),
    #[error("{0}")]
    Sign(#[from] PackSignError),
    #[error("{0} exists")]
    Exists(String),
    #[error("{0}: not a file path")]
    Path(String),
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("give a key name (--name)")]
    NoName,
}

type Result<T> = std::result::Result<T, TrustCmdError>;

pub fn run(cmd: TrustCmd) -> std::result::Result<(), String> {
    let r = match cmd {
        TrustCmd::Init {
            root_keys,
            root_threshold,
            out,
        } => (|| {
            if out.exists() {
                return Err(TrustCmdError::Exists(escape::path(&out)));
            }
            let mut keys = Vec::new();
            for arg in &root_keys {
                let (name, path) = match arg.split_once('=') {
                    Some((n, p)) => (n.to_owned(), PathBuf::from(p)),
                    None => {
                        let p = PathBuf::from(arg);
                        (keys::stem(&p).ok_or(TrustCmdError::NoName)?, p)
                    }
                };
                keys.push((name, keys::load_public(&path)?));
            }
            let t = TrustFile::new(keys, root_threshold)?;
            save(&out, &t)?;
            println!(
                "wrote {} (version 1, {} root keys, root threshold {})",
                escape::path(&out),
                t.keys.len(),
                root_threshold
            );
            Ok(())
        })(),
        TrustCmd::AddKey {
            file,
            role,
            key,
            name,
        } => (|| {
            let mut t = load_trust(&file)?;
            let pk = keys::load_public(&key)?;
            let name = name
                .or_else(|| keys::stem(&key))
                .ok_or(TrustCmdError::NoName)?;
            t.add_key(&name, &pk, role)?;
            save(&file, &t)?;
            println!(
                "added {name} ({}) with role {role} to {} (version {})",
                pk.key_id,
                escape::path(&file),
                t.version
            );
            Ok(())
        })(),
        TrustCmd::SetThreshold {
            file,
            role,
            threshold,
        } => (|| {
            let mut t = load_trust(&file)?;
            t.set_threshold(role, threshold)?;
            save(&file, &t)?;
            println!(
                "{}: threshold of {role} is now {threshold}",
                escape::path(&file)
            );
            Ok(())
        })(),
        TrustCmd::Bump { file } => (|| {
            let mut t = load_trust(&file)?;
            t.version += 1;
            save(&file, &t)?;
            println!("{}: version is now {}", escape::path(&file), t.version);
            Ok(())
        })(),
        TrustCmd::Sign {
            file,
            key,
            signer,
            pass,
        } => (|| {
            let bytes = read(&file)?;
            let t = TrustFile::parse(&bytes)?;
            let sk = keys::load_secret(&key, &pass)?;
            let signer = signer
                .or_else(|| keys::stem(&key))
                .ok_or(TrustCmdError::NoName)?;
            let (dir, stem) = split(&file)?;
            let comment = format!(
                "timestamp:{}\tfile:{stem}\tprehashed\ttrust version {}",
                pack::unix_now(),
                t.version
            );
            let p = pack::write_signature(&dir, &stem, &signer, &sk, &bytes, &comment)?;
            println!("wrote {} (key id {})", escape::path(&p), sk.key_id);
            Ok(())
        })(),
        TrustCmd::Verify { file, previous } => (|| {
            let bytes = read(&file)?;
            match previous {
                None => {
                    let t = TrustFile::parse(&bytes)?;
                    print_summary(&file, &t);
                }
                Some(prev) => {
                    let old = load_trust(&prev)?;
                    let sigs = signatures_of(&file)?;
                    let t = old.accept_rotation(&bytes, &sigs)?;
                    println!("rotation OK: version {} -> {}", old.version, t.version);
                    print_summary(&file, &t);
                }
            }
            Ok(())
        })(),
    };
    r.map_err(|e| e.to_string())
}

fn print_summary(file: &Path, t: &TrustFile) {
    println!("trust file {} version {}", escape::path(file), t.version);
    for role in Role::ALL {
        let names: Vec<&str> = t
            .keys
            .iter()
            .filter(|k| k.roles.contains(&role))
            .map(|k| k.name.as_str())
            .collect();
        println!(
            "  {role:<7} {} of {}: {}",
            t.threshold(role),
            names.len(),
            names.join(", ")
        );
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TrustCmdError::Read {
        path: escape::path(path),
        source,
    })
}

fn split(file: &Path) -> Result<(PathBuf, String)> {
    let stem = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TrustCmdError::Path(escape::path(file)))?
        .to_owned();
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, stem))
}

/// Signature files `FILE.SIGNER.minisig` next to the trust file.
fn signatures_of(file: &Path) -> Result<Vec<Candidate>> {
    let (dir, stem) = split(file)?;
    let prefix = format!("{stem}.");
    let mut out = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|source| TrustCmdError::Read {
        path: escape::path(&dir),
        source,
    })?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".minisig"))
        .collect();
    names.sort();
    for n in names {
        let bytes = read(&dir.join(&n))?;
        // An unparsable signature file is ignored (with its reason), not fatal.
        let sig = minisig::parse_signature_bytes(&bytes);
        out.push(Candidate { file: n, sig });
    }
    Ok(out)
}

/// Writes the trust file atomically and removes its now-stale signatures.
fn save(file: &Path, t: &TrustFile) -> Result<()> {
    let bytes = t.to_bytes()?;
    let (dir, stem) = split(file)?;
    write_atomic(&dir, &stem, &bytes)?;
    for s in signatures_of(file).unwrap_or_default() {
        let p = dir.join(&s.file);
        if std::fs::remove_file(&p).is_ok() {
            println!("removed stale signature {}", escape::path(&p));
        }
    }
    Ok(())
}
