//! A/B system updates under systemd-boot's automatic boot assessment.
//!
//! - [`slots`]: the slot entries' names (boot counter), states and the
//!   order systemd-boot boots them in (pure).
//! - [`esp`]: finding, locking and mounting the ESP; listing and renaming
//!   its slot entries, each step flushed.
//! - [`install`]: a verified system bundle from the store into the
//!   inactive slot (temp name, flush, rename).
//! - [`rotation`]: a new trust file carried by an update, accepted only
//!   when signed by the root thresholds of the old and the new file.
//! - [`health`]: the checks a new system passes before it is blessed.
//! - [`boot`]: `airlock-init system-boot`, PID 1's child at every boot:
//!   cleans interrupted writes, reports a fallback, runs the health check
//!   of an unblessed boot, then blesses and commits, or marks it bad.
//! - [`job`]: PID 1's side of that child.
//! - [`cmd`]: the console's `system` commands.

pub mod boot;
pub mod cmd;
pub mod esp;
pub mod health;
pub mod install;
pub mod job;
pub mod rotation;
pub mod slots;

use slots::Slot;
use std::path::{Path, PathBuf};

/// The bundle name of system bundles (one system per appliance).
pub const BUNDLE_NAME: &str = "airlock";
/// Directory on the state partition for what a boot leaves to the next
/// (the reason of a failed health check, which fallbacks were reported).
pub const STATE_DIR: &str = "system";

/// The slot systemd-boot booted (`LoaderEntrySelected`), else the one
/// the command line names (`airlock.slot=`, direct kernel boots in tests).
pub fn running_slot() -> Option<Slot> {
    let efi = crate::state::loader_text(
        Path::new(crate::state::EFIVARS),
        crate::state::LOADER_ENTRY_SELECTED,
    )
    .ok()
    .flatten();
    match efi {
        Some(id) => slots::slot_of_entry_id(&id),
        None => crate::cmdline::read().slot.as_deref().and_then(Slot::parse),
    }
}

/// The slot as the banner and `status` show it.
pub fn slot_label() -> String {
    match running_slot() {
        Some(s) => s.as_str().to_string(),
        None => "unknown".to_string(),
    }
}

/// A value of the image's `/etc/os-release`.
pub fn os_release(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    os_release_value(&text, key)
}

/// `KEY=value` or `KEY="value"` of an os-release text.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        Some(v.to_string())
    })
}

/// The variant this image was built as (`demo`, `production`).
pub fn running_variant() -> String {
    os_release("VARIANT_ID").unwrap_or_else(|| "production".into())
}

/// The system version this image carries.
pub fn running_version() -> Option<u64> {
    os_release("AIRLOCK_SYSTEM_VERSION").and_then(|v| v.parse().ok())
}

/// `system/` on the state partition.
pub fn state_dir() -> PathBuf {
    Path::new(crate::mounts::STATE_MOUNT).join(STATE_DIR)
}

/// The model store (where system bundles wait for their commit).
pub fn store_dir() -> PathBuf {
    Path::new(crate::mounts::STATE_MOUNT).join(crate::models::STORE_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values() {
        let t = "NAME=\"Airlock\"\nVARIANT_ID=demo\nAIRLOCK_SYSTEM_VERSION=2\nVERSION_ID=0.1.0\n";
        let table = [
            ("NAME", Some("Airlock")),
            ("VARIANT_ID", Some("demo")),
            ("AIRLOCK_SYSTEM_VERSION", Some("2")),
            ("VERSION", None),
            ("ID", None),
        ];
        for (k, want) in table {
            assert_eq!(os_release_value(t, k).as_deref(), want, "{k}");
        }
    }
}
