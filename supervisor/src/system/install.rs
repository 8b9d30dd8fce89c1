//! A system bundle, already verified into the store (its deferred import),
//! written into the inactive slot on the ESP. The order survives a power
//! cut at any step with the running slot untouched:
//!
//! 1. the UKI is copied from the store to `EFI/Linux/.airlock-X.new` (not
//!    `*.efi`: systemd-boot never sees it), hashed while copied and compared
//!    with the signed manifest, its `.osrel` checked (version and variant
//!    as the manifest says), flushed;
//! 2. the old entry of the inactive slot (an older system, or a failed
//!    one) is removed, flushed;
//! 3. the temp file is renamed to `airlock-X+3.efi` (three tries), flushed.
//!
//! A cut during 1 or 2 leaves a temp file (removed at the next boot) and
//! at most an empty inactive slot; after 3 the new entry is complete.

use super::esp::{self, EspError, Mounted};
use super::rotation::{self, Rotation};
use super::slots::{EntryName, Slot, TRIES};
use airlock_formats::import::{self, Commit, Importer, Progress};
use airlock_formats::manifest::{self, Manifest};
use airlock_formats::state::Decision;
use airlock_formats::trust::TrustFile;
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use thiserror::Error;

/// Failing step of an install.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error("not a system bundle (no system section)")]
    NotSystem,
    #[error("the UKI {0} is not listed in the manifest")]
    Unlisted(String),
    #[error("open the verified UKI {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("write the new slot: {0}")]
    Write(String),
    #[error("the UKI copied to the ESP does not match its manifest (SHA-256 {actual}); the slot was not changed")]
    Mismatch { actual: String },
    #[error("the UKI's own release file: {0}")]
    Osrel(String),
    #[error("the UKI says system version {uki}, its manifest {manifest}; refused")]
    VersionMismatch { uki: String, manifest: u64 },
    #[error("the UKI says variant {uki}, its manifest {manifest}; refused")]
    VariantMismatch { uki: String, manifest: String },
    #[error("{0}")]
    Esp(#[from] EspError),
}

/// Writes the UKI of the verified bundle in `version_dir` (manifest `m`)
/// into `slot`; returns the new entry's file name. `progress` gets byte
/// counts.
pub fn install(
    version_dir: &Path,
    m: &Manifest,
    esp: &Mounted,
    slot: Slot,
    progress: &mut dyn FnMut(u64),
) -> Result<String, InstallError> {
    let section = m.system.as_ref().ok_or(InstallError::NotSystem)?;
    let entry = m
        .files
        .iter()
        .find(|f| f.path == section.uki)
        .ok_or_else(|| InstallError::Unlisted(section.uki.clone()))?;
    let src_path = version_dir.join(&entry.path);
    let mut src = std::fs::File::open(&src_path).map_err(|source| InstallError::Open {
        path: src_path.display().to_string(),
        source,
    })?;
    let dir = esp.linux_dir();
    std::fs::create_dir_all(&dir).map_err(|e| InstallError::Write(e.to_string()))?;
    let temp = slot.temp_name();
    let temp_path = dir.join(&temp);
    let _ = std::fs::remove_file(&temp_path);
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| InstallError::Write(format!("create {temp}: {e}")))?;
        let digest =
            airlock_formats::stream::stream(&mut src, entry.size, Some(&mut out), progress)
                .map_err(|e| InstallError::Write(e.to_string()))?;
        let actual = manifest::hex(&digest);
        if actual != entry.sha256 {
            return Err(InstallError::Mismatch { actual });
        }
        out.sync_all()
            .map_err(|e| InstallError::Write(format!("flush {temp}: {e}")))?;
        drop(out);
        check_osrel(&temp_path, m, &section.variant)?;
        esp.sync()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = esp::remove(esp, &dir, &temp);
        return Err(e);
    }
    for (name, _) in esp::entries(&dir)? {
        if name.slot == slot {
            esp::remove(esp, &dir, &name.file_name())?;
        }
    }
    let new = EntryName::fresh(slot, TRIES).file_name();
    esp::rename(esp, &dir, &temp, &new)?;
    Ok(new)
}

/// The UKI's `.osrel` must name the manifest's version and variant.
fn check_osrel(path: &Path, m: &Manifest, variant: &str) -> Result<(), InstallError> {
    let mut f = std::fs::File::open(path).map_err(|e| InstallError::Osrel(e.to_string()))?;
    let os =
        airlock_formats::uki::read_osrel(&mut f).map_err(|e| InstallError::Osrel(e.to_string()))?;
    match os.system_version() {
        Some(v) if v == m.version => {}
        other => {
            return Err(InstallError::VersionMismatch {
                uki: other.map_or("none".into(), |v| v.to_string()),
                manifest: m.version,
            })
        }
    }
    let uki_variant = os.variant_id().unwrap_or("production").to_string();
    if uki_variant != variant {
        return Err(InstallError::VariantMismatch {
            uki: crate::screen::line(&uki_variant).into_owned(),
            manifest: variant.to_string(),
        });
    }
    Ok(())
}

/// Why a verified system bundle cannot be installed on this appliance
/// (`None`: it can). `decision` is the anti-rollback check's (errors, i.e.
/// lower versions, are refused before this).
pub fn refusal(m: &Manifest, decision: &Decision) -> Option<String> {
    let running = super::running_slot();
    refusal_for(
        m,
        decision,
        running,
        &super::running_variant(),
        std::fs::read(crate::models::TRUST_FILE)
            .ok()
            .map(|b| manifest::hex(&Sha256::digest(&b))),
    )
}

/// [`refusal`] with the appliance's facts given.
pub fn refusal_for(
    m: &Manifest,
    decision: &Decision,
    running: Option<Slot>,
    variant: &str,
    trust_sha256: Option<String>,
) -> Option<String> {
    let Some(s) = m.system.as_ref() else {
        return Some("not a system bundle (no system section)".into());
    };
    if m.name != super::BUNDLE_NAME {
        return Some(format!(
            "a system bundle must be named '{}', not '{}'",
            super::BUNDLE_NAME,
            crate::screen::line(&m.name)
        ));
    }
    if s.variant != variant {
        return Some(format!(
            "built for the '{}' variant; this appliance runs the '{variant}' variant",
            crate::screen::line(&s.variant)
        ));
    }
    // Other trust roots only with a carried, root-signed trust file: its
    // signatures are checked after the verified copy (`rotation::check`).
    if trust_sha256.as_deref() != Some(s.trust_sha256.as_str()) && s.trust.is_none() {
        return Some(
            "it carries other trust roots than this appliance's but no signed rotation \
             (trust.json and its root signatures)"
                .into(),
        );
    }
    if *decision == Decision::Same {
        return Some(format!(
            "version {} is the committed system already",
            m.version
        ));
    }
    if running.is_none() {
        return Some(
            "this boot did not come through systemd-boot (no boot slots): system updates \
             need a disk boot"
                .into(),
        );
    }
    None
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    pub slot: Slot,
    /// The new entry's file name (`airlock-b+3.efi`).
    pub entry: String,
    /// The trust roots the new system brings (`Same`, or a checked rotation).
    pub trust: Rotation,
}

/// Imports the system bundle `src` (a stick's bundle directory) into the
/// store with a deferred commit (verified while copied, the stick read
/// once), then writes its UKI into the inactive slot.
pub fn from_stick(
    src: &Path,
    store: &Path,
    trust: &TrustFile,
    by: &Importer,
    progress: &mut dyn Progress,
    on_write: &mut dyn FnMut(Slot),
) -> Result<Installed, String> {
    let running = super::running_slot()
        .ok_or("this boot did not come through systemd-boot: there are no boot slots")?;
    let slot = running.other();
    // Checked before the copy: a busy or missing ESP changes nothing.
    let dev = esp::locate().map_err(|e| e.to_string())?;
    let esp = esp::mount_esp(&dev, true).map_err(|e| e.to_string())?;
    let rep = import::import_by(src, store, trust, Commit::Deferred, by, progress)
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(rep.destination.join(manifest::MANIFEST_FILE))
        .map_err(|e| format!("read the stored manifest: {e}"))?;
    let m = Manifest::parse(&bytes).map_err(|e| format!("the stored manifest: {e}"))?;
    // A new trust file takes effect only if both root thresholds signed it.
    let current_bytes = std::fs::read(crate::models::TRUST_FILE)
        .map_err(|e| format!("read {}: {e}", crate::models::TRUST_FILE))?;
    let trust = rotation::check(trust, &current_bytes, &m, &rep.destination)
        .map_err(|e| format!("trust rotation refused: {e}"))?;
    on_write(slot);
    let entry = install(&rep.destination, &m, &esp, slot, &mut |n| {
        progress.advance(n)
    })
    .map_err(|e| e.to_string())?;
    drop(esp);
    Ok(Installed { slot, entry, trust })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_formats::manifest::SystemSection;

    fn manifest(name: &str, variant: &str, trust: &str) -> Manifest {
        let mut m = Manifest::parse(
            br#"{"schema":"airlock-bundle/1","kind":"system","name":"airlock","version":2,
                "created":"2026-01-01T00:00:00Z","files":[{"path":"airlock.efi","size":1,
                "sha256":"0000000000000000000000000000000000000000000000000000000000000000"}],
                "system":{"uki":"airlock.efi","variant":"demo",
                "trust_sha256":"1111111111111111111111111111111111111111111111111111111111111111"}}"#,
        )
        .expect("sample manifest");
        m.name = name.into();
        m.system = Some(SystemSection {
            uki: "airlock.efi".into(),
            variant: variant.into(),
            trust_sha256: trust.into(),
            trust: None,
        });
        m
    }

    fn rotating(trust_sha256: &str) -> Manifest {
        let mut m = manifest("airlock", "demo", trust_sha256);
        if let Some(s) = m.system.as_mut() {
            s.trust = Some("trust.json".into());
        }
        m
    }

    #[test]
    fn refusals_name_the_reason() {
        let t = "1".repeat(64);
        let up = Decision::Upgrade { from: 1 };
        let table: &[(Manifest, Decision, Option<Slot>, Option<&str>)] = &[
            (manifest("airlock", "demo", &t), up, Some(Slot::A), None),
            (
                manifest("airlock", "demo", &t),
                Decision::New,
                Some(Slot::B),
                None,
            ),
            (
                manifest("other", "demo", &t),
                up,
                Some(Slot::A),
                Some("a system bundle must be named 'airlock', not 'other'"),
            ),
            (
                manifest("airlock", "production", &t),
                up,
                Some(Slot::A),
                Some("built for the 'production' variant; this appliance runs the 'demo' variant"),
            ),
            (
                manifest("airlock", "demo", &"2".repeat(64)),
                up,
                Some(Slot::A),
                Some("it carries other trust roots than this appliance's but no signed rotation"),
            ),
            // A carried trust file: allowed here, its signatures checked after the copy.
            (rotating(&"2".repeat(64)), up, Some(Slot::A), None),
            (
                manifest("airlock", "demo", &t),
                Decision::Same,
                Some(Slot::A),
                Some("version 2 is the committed system already"),
            ),
            (
                manifest("airlock", "demo", &t),
                up,
                None,
                Some("this boot did not come through systemd-boot"),
            ),
        ];
        for (m, d, running, want) in table {
            let got = refusal_for(m, d, *running, "demo", Some(t.clone()));
            match want {
                None => assert_eq!(got, None),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(w)),
                    "{got:?} should start with {w:?}"
                ),
            }
        }
    }
}
