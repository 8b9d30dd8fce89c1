//! `airlock bundle pack|sign|verify|install`.

use crate::keys::{self, KeyError};
use crate::progress::{Bar, ImportBar};
use crate::BundleCmd;
use airlock_formats::bundle::{self, BundleError};
use airlock_formats::import::{self, Commit, ImportError};
use airlock_formats::manifest::{Kind, MANIFEST_FILE};
use airlock_formats::pack::{self, Input, PackError, PackSignError, PackSpec, Section};
use airlock_formats::state::{Decision, State, StateError};
use airlock_formats::trust::{TrustError, TrustFile};
use std::path::Path;

/// Errors of the bundle commands; each wraps the failing step's error.
#[derive(Debug, thiserror::Error)]
pub enum BundleCmdError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Pack(#[from] PackError),
    #[error("{0}")]
    Sign(#[from] PackSignError),
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("trust file {path}: {source}")]
    Trust { path: String, source: TrustError },
    #[error("read trust file {path}: {source}")]
    ReadTrust {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, BundleCmdError>;

pub fn run(cmd: BundleCmd) -> std::result::Result<(), String> {
    let r = match cmd {
        BundleCmd::Pack {
            kind,
            name,
            version,
            description,
            created,
            gguf,
            architecture,
            context_length,
            chat_template,
            uki,
            out,
            files,
        } => (|| {
            if kind == Kind::Model && uki.is_some() {
                return Err(BundleCmdError::Usage(
                    "--uki given for a model bundle".into(),
                ));
            }
            let section = match kind {
                Kind::Model => Section::Model {
                    gguf,
                    architecture: architecture.ok_or_else(|| {
                        BundleCmdError::Usage("model bundles need --architecture".into())
                    })?,
                    context_length: context_length.ok_or_else(|| {
                        BundleCmdError::Usage("model bundles need --context-length".into())
                    })?,
                    chat_template,
                },
                Kind::System => {
                    if gguf.is_some()
                        || architecture.is_some()
                        || context_length.is_some()
                        || chat_template.is_some()
                    {
                        return Err(BundleCmdError::Usage(
                            "model options given for a system bundle".into(),
                        ));
                    }
                    Section::System { uki }
                }
            };
            let inputs = files
                .iter()
                .map(|f| Input::parse(f))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let total = inputs
                .iter()
                .filter_map(|i| std::fs::metadata(&i.source).ok())
                .map(|m| m.len())
                .sum();
            let spec = PackSpec {
                name,
                version,
                description,
                created,
                inputs,
                section,
            };
            let bar = Bar::new(total, "pack");
            let m = pack::pack(&spec, &out, &mut |n| bar.inc(n));
            bar.done();
            let m = m?;
            println!(
                "packed {} {} version {} into {} ({} files, {} bytes); sign it with `airlock bundle sign {} --key KEY`",
                m.kind,
                m.name,
                m.version,
                out.display(),
                m.files.len(),
                m.total_size(),
                out.display()
            );
            Ok(())
        })(),
        BundleCmd::Sign {
            dir,
            key,
            signer,
            pass,
        } => (|| {
            let (bytes, m) = bundle::read_manifest(&dir)?;
            let sk = keys::load_secret(&key, &pass)?;
            let signer = match signer.or_else(|| keys::stem(&key)) {
                Some(s) => s,
                None => return Err(BundleCmdError::Usage("give --signer NAME".into())),
            };
            let comment = format!(
                "timestamp:{}\tfile:{MANIFEST_FILE}\tprehashed\t{} {} {}",
                pack::unix_now(),
                m.kind,
                m.name,
                m.version
            );
            let p = pack::write_signature(&dir, MANIFEST_FILE, &signer, &sk, &bytes, &comment)?;
            println!("wrote {} (key id {})", p.display(), sk.key_id);
            Ok(())
        })(),
        BundleCmd::Verify { dir, trust, state } => verify(&dir, &trust, state.as_deref()),
        BundleCmd::Install { dir, trust, store } => install(&dir, &trust, &store),
    };
    r.map_err(|e| e.to_string())
}

pub fn load_trust(path: &Path) -> Result<TrustFile> {
    let bytes = std::fs::read(path).map_err(|source| BundleCmdError::ReadTrust {
        path: path.display().to_string(),
        source,
    })?;
    TrustFile::parse(&bytes).map_err(|source| BundleCmdError::Trust {
        path: path.display().to_string(),
        source,
    })
}

fn verify(dir: &Path, trust: &Path, state_dir: Option<&Path>) -> Result<()> {
    let trust = load_trust(trust)?;
    let b = bundle::open_verified(dir, &trust)?;
    let decision = match state_dir {
        Some(s) => Some(b.check_state(&State::load(s)?)?),
        None => None,
    };
    let bar = Bar::new(b.manifest.total_size(), "verify");
    let r = b.verify_payloads(&mut |n| bar.inc(n));
    bar.done();
    r?;
    let m = &b.manifest;
    println!("bundle OK: {} {} version {}", m.kind, m.name, m.version);
    println!("  created     {}", m.created);
    if !m.description.is_empty() {
        println!("  description {}", m.description.replace(['\n', '\r'], " "));
    }
    println!("  manifest    sha256 {}", b.manifest_sha256);
    println!(
        "  signers     {} ({} of {} required {} signatures): {}",
        b.approval.signers.len(),
        b.approval.signers.len(),
        trust.threshold(b.approval.role),
        b.approval.role,
        b.approval.signers.join(", ")
    );
    if !b.approval.ignored.is_empty() {
        println!(
            "  ignored     {} (key not in trust file)",
            b.approval.ignored.join(", ")
        );
    }
    match (&m.model, &m.system) {
        (Some(md), _) => println!(
            "  model       gguf {}, architecture {}, context {}{}",
            md.gguf,
            md.architecture,
            md.context_length,
            md.chat_template
                .as_ref()
                .map(|t| format!(", chat template {t}"))
                .unwrap_or_default()
        ),
        (_, Some(s)) => println!("  system      uki {}", s.uki),
        _ => {}
    }
    println!(
        "  payload     {} files, {} bytes",
        m.files.len(),
        m.total_size()
    );
    for f in &m.files {
        println!("    {:>14}  {}  {}", f.size, f.sha256, f.path);
    }
    if let Some(d) = decision {
        println!("  state       {}", describe(d));
    }
    Ok(())
}

fn describe(d: Decision) -> String {
    match d {
        Decision::New => "new (nothing of this name installed)".into(),
        Decision::Upgrade { from } => format!("upgrade from version {from}"),
        Decision::Same => "same version and manifest already installed".into(),
    }
}

fn install(dir: &Path, trust: &Path, store: &Path) -> Result<()> {
    let trust = load_trust(trust)?;
    let mut bar = ImportBar(None);
    let r = import::import(dir, store, &trust, Commit::Now, &mut bar)?;
    for p in &r.recovered {
        println!("removed leftover of an interrupted import: {p}");
    }
    if r.already_installed {
        println!(
            "already installed: {} {} version {} at {}",
            r.kind,
            r.name,
            r.version,
            r.destination.display()
        );
    } else {
        println!(
            "installed {} {} version {} ({}; {} bytes; signed by {}) at {}",
            r.kind,
            r.name,
            r.version,
            describe(r.decision),
            r.bytes,
            r.signers.join(", "),
            r.destination.display()
        );
    }
    Ok(())
}
