//! `airlock bundle pack|sign|verify|install`.

use crate::keys::{self, KeyError};
use crate::progress::{Bar, ImportBar};
use crate::BundleCmd;
use airlock_formats::bundle::{self, BundleError};
use airlock_formats::escape;
use airlock_formats::import::{self, Commit, ImportError};
use airlock_formats::manifest::{self, Kind, MANIFEST_FILE};
use airlock_formats::pack::{self, Input, PackError, PackSignError, PackSpec, Section};
use airlock_formats::state::{Decision, State, StateError};
use airlock_formats::trust::{TrustError, TrustFile};
use std::path::{Path, PathBuf};

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

/// The system options of `bundle pack`.
struct SystemArgs {
    version: Option<u64>,
    uki: Option<String>,
    variant: Option<String>,
    trust: Option<PathBuf>,
    files: Vec<String>,
}

/// Kind section, version and payload of a system bundle: everything given.
fn system_explicit(a: SystemArgs) -> Result<(Section, Option<u64>, Vec<Input>)> {
    let (Some(variant), Some(trust)) = (a.variant, &a.trust) else {
        return Err(BundleCmdError::Usage(
            "a system bundle needs --variant V and --trust FILE (the trust file built into the UKI), or --from-build DIR".into(),
        ));
    };
    manifest::validate_variant(&variant).map_err(PackError::from)?;
    let inputs = a
        .files
        .iter()
        .map(|f| Input::parse(f))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let section = Section::System {
        uki: a.uki,
        variant,
        trust_sha256: pack::trust_sha256(trust)?,
        trust: None,
    };
    Ok((section, a.version, inputs))
}

/// Kind section, version and payload of a system bundle from a
/// `scripts/build-image` output directory; options given must agree.
fn system_from_build(dir: &Path, a: SystemArgs) -> Result<(Section, Option<u64>, Vec<Input>)> {
    if !a.files.is_empty() {
        return Err(BundleCmdError::Usage(format!(
            "--from-build takes the payload from {}: give no FILE",
            escape::path(&dir.join(pack::BUILD_UKI))
        )));
    }
    if a.uki.is_some() {
        return Err(BundleCmdError::Usage(format!(
            "--uki and --from-build exclude each other (the UKI is {})",
            pack::BUILD_UKI
        )));
    }
    let info = pack::read_build(dir)?;
    let uki = escape::path(&info.uki);
    if let Some(v) = a.version.filter(|&v| v != info.version) {
        return Err(BundleCmdError::Usage(format!(
            "--version {v} differs from the UKI's AIRLOCK_SYSTEM_VERSION={} ({uki})",
            info.version
        )));
    }
    if let Some(v) = a.variant.as_deref().filter(|&v| v != info.variant) {
        return Err(BundleCmdError::Usage(format!(
            "--variant {} differs from the UKI's VARIANT_ID={} ({uki})",
            escape::text(v),
            escape::text(&info.variant)
        )));
    }
    if let Some(t) = &a.trust {
        if pack::trust_sha256(t)? != info.trust_sha256 {
            return Err(BundleCmdError::Usage(format!(
                "--trust {} is not the trust file built into the UKI ({})",
                escape::path(t),
                escape::path(&dir.join(pack::BUILD_TRUST))
            )));
        }
    }
    // Signatures beside trust.json: a rotation, the bundle carries them.
    let (inputs, trust) = info.payload();
    let section = Section::System {
        uki: None,
        variant: info.variant,
        trust_sha256: info.trust_sha256,
        trust,
    };
    Ok((section, Some(info.version), inputs))
}

pub fn run(cmd: BundleCmd) -> std::result::Result<(), String> {
    let r = match cmd {
        BundleCmd::Pack(args) => (|| {
            let crate::PackArgs {
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
                variant,
                trust,
                from_build,
                split,
                out,
                files,
            } = *args;
            let system_opts =
                uki.is_some() || variant.is_some() || trust.is_some() || from_build.is_some();
            if kind == Kind::Model && system_opts {
                return Err(BundleCmdError::Usage(
                    "system options (--uki, --variant, --trust, --from-build) given for a model bundle"
                        .into(),
                ));
            }
            let (section, version, inputs) = match kind {
                Kind::Model => (
                    Section::Model {
                        gguf,
                        architecture,
                        context_length,
                        chat_template,
                    },
                    version,
                    files
                        .iter()
                        .map(|f| Input::parse(f))
                        .collect::<std::result::Result<Vec<_>, _>>()?,
                ),
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
                    if name != pack::SYSTEM_BUNDLE_NAME {
                        return Err(BundleCmdError::Usage(format!(
                            "a system bundle is named {} (--name {0}), not {}",
                            pack::SYSTEM_BUNDLE_NAME,
                            escape::text(&name)
                        )));
                    }
                    let sys = SystemArgs {
                        version,
                        uki,
                        variant,
                        trust,
                        files,
                    };
                    match from_build {
                        Some(dir) => system_from_build(&dir, sys)?,
                        None => system_explicit(sys)?,
                    }
                }
            };
            let version =
                version.ok_or_else(|| BundleCmdError::Usage("no --version given".into()))?;
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
                split,
            };
            let bar = Bar::new(total, "pack");
            let m = pack::pack(&spec, &out, &mut |n| bar.inc(n));
            bar.done();
            let m = m?;
            if let Some(s) = &m.system {
                println!(
                    "system {} version {}: variant {}, trust file sha256 {}",
                    escape::text(&s.uki),
                    m.version,
                    escape::text(&s.variant),
                    escape::text(&s.trust_sha256)
                );
                if let Some(t) = &s.trust {
                    println!("{}", carried(t, &m));
                }
            }
            if let Some(md) = &m.model {
                println!(
                    "model {}: architecture {}, context {}, chat template {}",
                    escape::text(&md.gguf),
                    escape::text(&md.architecture),
                    md.context_length,
                    md.chat_template
                        .as_deref()
                        .map_or("none".into(), escape::text)
                );
            }
            for f in m.files.iter().filter(|f| !f.parts().is_empty()) {
                println!(
                    "split {} ({} bytes) into {} parts: {}",
                    escape::text(&f.path),
                    f.size,
                    f.parts().len(),
                    f.parts()
                        .iter()
                        .map(|p| escape::text(&p.path).into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "packed {} {} version {} into {} ({} files, {} bytes); sign it with `airlock bundle sign {} --key KEY`",
                m.kind,
                escape::text(&m.name),
                m.version,
                escape::path(&out),
                m.files.len(),
                m.total_size(),
                escape::path(&out)
            );
            Ok(())
        })(),
        BundleCmd::Sign {
            dir,
            key,
            signer,
            pass,
        } => (|| {
            // Check what is signed before anything else: layout, listing,
            // and every payload's SHA-256 (read once each), then show it.
            let b = bundle::open(&dir)?;
            let bar = Bar::new(b.manifest.total_size(), "hash");
            let r = b.verify_payloads(&mut |n| bar.inc(n));
            bar.done();
            r?;
            let m = &b.manifest;
            println!(
                "signing {} {} version {} (payloads OK)",
                m.kind,
                escape::text(&m.name),
                m.version
            );
            print_details(&b);
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
            // The bytes signed are the bytes checked above (read once).
            let p = pack::write_signature(
                &dir,
                MANIFEST_FILE,
                &signer,
                &sk,
                &b.manifest_bytes,
                &comment,
            )?;
            println!("wrote {} (key id {})", escape::path(&p), sk.key_id);
            Ok(())
        })(),
        BundleCmd::Verify {
            dir,
            trust,
            state,
            allow_missing_signatures,
        } => verify(&dir, &trust, state.as_deref(), allow_missing_signatures),
        BundleCmd::Install { dir, trust, store } => install(&dir, &trust, &store),
    };
    r.map_err(|e| e.to_string())
}

/// What `pack` says of a carried trust file `trust` (a rotation).
fn carried(trust: &str, m: &manifest::Manifest) -> String {
    let sigs = m.system.as_ref().map_or(0, |s| {
        m.files
            .iter()
            .filter(|f| s.is_trust_signature(&f.path))
            .count()
    });
    format!(
        "carries the trust file {} with {sigs} root signatures (trust-root rotation)",
        escape::text(trust)
    )
}

pub fn load_trust(path: &Path) -> Result<TrustFile> {
    let bytes = std::fs::read(path).map_err(|source| BundleCmdError::ReadTrust {
        path: escape::path(path),
        source,
    })?;
    TrustFile::parse(&bytes).map_err(|source| BundleCmdError::Trust {
        path: escape::path(path),
        source,
    })
}

/// Checks everything, hashing every payload even when signatures are
/// missing (so co-signers can check the bytes). Exit: 0 when the bundle is
/// acceptable; with `allow_missing`, also 0 when the only shortfall is the
/// signature threshold; 1 otherwise (one reason line).
fn verify(dir: &Path, trust: &Path, state_dir: Option<&Path>, allow_missing: bool) -> Result<()> {
    let trust = load_trust(trust)?;
    let b = bundle::open(dir)?;
    let tally = b.count_signatures(&trust)?;
    let decision = match state_dir {
        Some(s) => Some(b.check_state(&State::load(s)?)?),
        None => None,
    };
    let bar = Bar::new(b.manifest.total_size(), "verify");
    let r = b.verify_payloads(&mut |n| bar.inc(n));
    bar.done();
    r?;
    let m = &b.manifest;
    let head = if tally.met() {
        "bundle OK"
    } else {
        "payloads OK, signatures missing"
    };
    println!(
        "{head}: {} {} version {}",
        m.kind,
        escape::text(&m.name),
        m.version
    );
    println!("  manifest    sha256 {}", b.manifest_sha256);
    println!(
        "  signers     {} ({} of {} required {} signatures): {}",
        tally.signers.len(),
        tally.signers.len(),
        tally.need,
        tally.role,
        join_escaped(&tally.signers)
    );
    for i in &tally.ignored {
        println!("  ignored     {i}");
    }
    print_details(&b);
    if let Some(d) = decision {
        println!("  state       {}", describe(d));
    }
    if !tally.met() {
        println!(
            "payloads OK; signatures: {} of {} required for role {} (missing {})",
            tally.signers.len(),
            tally.need,
            tally.role,
            tally.missing()
        );
        if !allow_missing {
            tally.check().map_err(BundleError::from)?;
        }
    }
    Ok(())
}

/// Names from a trust file or a stick, escaped and comma-separated.
fn join_escaped(names: &[String]) -> String {
    names
        .iter()
        .map(|n| escape::text(n).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The manifest's contents as checked: created, description, kind section,
/// every file with size and SHA-256. Every string is escaped.
fn print_details(b: &bundle::Bundle) {
    let m = &b.manifest;
    println!("  created     {}", escape::text(&m.created));
    if !m.description.is_empty() {
        println!("  description {}", escape::text(&m.description));
    }
    match (&m.model, &m.system) {
        (Some(md), _) => println!(
            "  model       gguf {}, architecture {}, context {}{}",
            escape::text(&md.gguf),
            escape::text(&md.architecture),
            md.context_length,
            md.chat_template
                .as_ref()
                .map(|t| format!(", chat template {}", escape::text(t)))
                .unwrap_or_default()
        ),
        (_, Some(s)) => println!(
            "  system      uki {}, variant {}, trust file sha256 {}{}",
            escape::text(&s.uki),
            escape::text(&s.variant),
            escape::text(&s.trust_sha256),
            s.trust
                .as_ref()
                .map(|t| format!(", carries trust file {} (rotation)", escape::text(t)))
                .unwrap_or_default()
        ),
        _ => {}
    }
    println!(
        "  payload     {} files, {} bytes",
        m.files.len(),
        m.total_size()
    );
    for f in &m.files {
        println!(
            "    {:>14}  {}  {}",
            f.size,
            escape::text(&f.sha256),
            escape::text(&f.path)
        );
        // A split payload: its parts, indented under the joined file.
        for p in f.parts() {
            println!(
                "      {:>12}  {}  part {}",
                p.size,
                escape::text(&p.sha256),
                escape::text(&p.path)
            );
        }
    }
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
    // The host install names the local user as importer.
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let by = import::Importer::now(&format!("host:{user}"));
    let r = import::import_by(dir, store, &trust, Commit::Now, &by, &mut bar)?;
    for p in &r.recovered {
        // Already escaped by the import.
        println!("removed leftover of an interrupted import: {p}");
    }
    for i in &r.ignored {
        println!("ignored signature {i}");
    }
    if r.already_installed {
        println!(
            "already installed: {} {} version {} at {}",
            r.kind,
            escape::text(&r.name),
            r.version,
            escape::path(&r.destination)
        );
    } else {
        println!(
            "installed {} {} version {} ({}; {} bytes; signed by {}) at {}",
            r.kind,
            escape::text(&r.name),
            r.version,
            describe(r.decision),
            r.bytes,
            join_escaped(&r.signers),
            escape::path(&r.destination)
        );
    }
    Ok(())
}
