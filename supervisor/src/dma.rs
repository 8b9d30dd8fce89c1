//! DMA protection (DESIGN, sandbox layer 7): whether an IOMMU translates
//! every device's memory accesses, and what the appliance does without one.
//!
//! The kernel has the Intel and AMD IOMMU drivers built in and the command
//! line asks for strict translation from boot (kernel-config "DMA
//! protection", image/cmdline). Whether that took effect depends on the PC:
//! VT-d / AMD-Vi may be missing or switched off in the firmware setup, and
//! then any PCIe or Thunderbolt device can read the keys and plaintext in
//! RAM. This module reads what the kernel set up, from sysfs:
//! - an IOMMU registered under `/sys/class/iommu` (`dmar0`, `ivhd0`, ...);
//! - every PCI device in an IOMMU group (`/sys/bus/pci/devices/*/iommu_group`);
//! - every group's default domain of a protecting type ([`PROTECTING_TYPES`]),
//!   never `identity` (passthrough);
//! - interrupt remapping (`IR-` interrupt chips in /proc/interrupts), shown
//!   but not demanded.
//!
//! What happens when protection is not active is policy (`airlock.dma=`).

use std::collections::BTreeMap;
use std::path::Path;

/// What the appliance does when DMA protection is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Refuse "ready" (fail closed). The default: DESIGN promises that
    /// devices cannot read memory, and a security team expects the box to
    /// say no rather than run with keys open to any PCIe/Thunderbolt device.
    Require,
    /// Stay ready but show the missing protection on every console start and
    /// in `status`: for a PC the security team has examined and accepted
    /// without an IOMMU (they set it in image/cmdline, inside the UKI).
    Warn,
}

/// The policy when `airlock.dma=` is not on the command line.
pub const DEFAULT_POLICY: Policy = Policy::Require;

/// Command-line words of the policies.
pub const POLICY_WORDS: &[(&str, Policy)] = &[("require", Policy::Require), ("warn", Policy::Warn)];

/// Default-domain types (`/sys/kernel/iommu_groups/N/type`) that protect
/// memory, each with its reason. Anything else does not:
/// `identity` (passthrough: the device sees all RAM), `DMA-FQ` (lazy: a
/// device can still reach a freed buffer until the batched flush; the
/// command line asks for strict), `unmanaged` (owned by a user-space driver).
pub const PROTECTING_TYPES: &[(&str, &str)] = &[
    // Translated through per-device page tables, IOTLB flushed on every unmap.
    ("DMA", "translated"),
    // No DMA at all.
    ("blocked", "blocked"),
];

/// What the kernel set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Names under /sys/class/iommu.
    pub iommus: Vec<String>,
    /// PCI devices (`0000:00:02.0`) and their group number, or `None`.
    pub devices: Vec<(String, Option<String>)>,
    /// Group number -> default domain type.
    pub groups: BTreeMap<String, String>,
    /// Interrupt remapping seen in /proc/interrupts (`None`: not readable).
    pub irq_remap: Option<bool>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads the facts from `sys` (normally /sys) and the text of
/// /proc/interrupts.
pub fn probe(sys: &Path, interrupts: Option<&str>) -> Report {
    let iommus = names(&sys.join("class/iommu"));
    let pci = sys.join("bus/pci/devices");
    let devices: Vec<(String, Option<String>)> = names(&pci)
        .into_iter()
        .map(|d| {
            let group = std::fs::read_link(pci.join(&d).join("iommu_group"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            (d, group)
        })
        .collect();
    let groups = names(&sys.join("kernel/iommu_groups"))
        .into_iter()
        .map(|g| {
            let t = std::fs::read_to_string(sys.join("kernel/iommu_groups").join(&g).join("type"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            (g, t)
        })
        .collect();
    let irq_remap = interrupts.map(|t| t.split_whitespace().any(|w| w.starts_with("IR-")));
    Report {
        iommus,
        devices,
        groups,
        irq_remap,
    }
}

/// Reads the facts of this machine.
pub fn probe_system() -> Report {
    let interrupts = std::fs::read_to_string("/proc/interrupts").ok();
    probe(Path::new("/sys"), interrupts.as_deref())
}

fn protecting(t: &str) -> bool {
    PROTECTING_TYPES.iter().any(|(n, _)| *n == t)
}

impl Report {
    /// `Ok(summary)` when DMA protection is active, else why not.
    pub fn verdict(&self) -> Result<String, String> {
        if self.iommus.is_empty() {
            return Err(
                "no IOMMU (none under /sys/class/iommu: VT-d / AMD-Vi missing or \
                        switched off in the firmware setup)"
                    .into(),
            );
        }
        let mut why: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, g)| g.is_none())
            .map(|(d, _)| format!("{d} in no IOMMU group"))
            .collect();
        why.extend(
            self.groups
                .iter()
                .filter(|(_, t)| !protecting(t))
                .map(|(g, t)| format!("group {g} is {t}, not translated")),
        );
        if !why.is_empty() {
            return Err(format!("{} ({})", why.join(", "), self.iommus.join(",")));
        }
        let types: Vec<&str> = PROTECTING_TYPES
            .iter()
            .filter(|(n, _)| self.groups.values().any(|t| t == n))
            .map(|(_, label)| *label)
            .collect();
        Ok(format!(
            "{}; {} PCI devices in {} groups, all {}; interrupt remapping {}",
            self.iommus.join(","),
            self.devices.len(),
            self.groups.len(),
            if types.is_empty() {
                "translated".to_string()
            } else {
                types.join(" or ")
            },
            match self.irq_remap {
                Some(true) => "on",
                Some(false) => "off",
                None => "unknown",
            }
        ))
    }

    /// The `dma protection` status value under `policy`.
    pub fn status_value(&self, policy: Policy) -> String {
        match (self.verdict(), policy) {
            (Ok(s), _) => format!("active ({s})"),
            (Err(why), Policy::Require) => format!("ABSENT — {why}"),
            (Err(why), Policy::Warn) => {
                format!("ABSENT — {why}; running anyway (airlock.dma=warn)")
            }
        }
    }

    /// The readiness consequence: `Err(reason)` only under [`Policy::Require`].
    pub fn readiness(&self, policy: Policy) -> Result<(), String> {
        match (self.verdict(), policy) {
            (Ok(_), _) | (Err(_), Policy::Warn) => Ok(()),
            (Err(why), Policy::Require) => Err(format!("DMA protection absent: {why}")),
        }
    }

    /// The warning every console shows under [`Policy::Warn`] without protection.
    pub fn warning(&self, policy: Policy) -> Option<String> {
        match (self.verdict(), policy) {
            (Err(why), Policy::Warn) => Some(format!(
                "airlock: WARNING — no DMA protection: {why}; any PCIe or Thunderbolt device \
                 can read memory (airlock.dma=warn)"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys: (iommus, [(pci device, group)], [(group, type)]).
    fn fake(
        iommus: &[&str],
        devices: &[(&str, Option<&str>)],
        groups: &[(&str, &str)],
    ) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        std::fs::create_dir_all(s.join("class/iommu")).unwrap();
        std::fs::create_dir_all(s.join("bus/pci/devices")).unwrap();
        std::fs::create_dir_all(s.join("kernel/iommu_groups")).unwrap();
        for i in iommus {
            std::fs::create_dir_all(s.join("devices/virtual/iommu").join(i)).unwrap();
            symlink(
                format!("../../devices/virtual/iommu/{i}"),
                s.join("class/iommu").join(i),
            )
            .unwrap();
        }
        for (g, ty) in groups {
            let gd = s.join("kernel/iommu_groups").join(g);
            std::fs::create_dir_all(&gd).unwrap();
            std::fs::write(gd.join("type"), format!("{ty}\n")).unwrap();
        }
        for (d, g) in devices {
            let dd = s.join("devices/pci0000:00").join(d);
            std::fs::create_dir_all(&dd).unwrap();
            if let Some(g) = g {
                symlink(
                    format!("../../kernel/iommu_groups/{g}"),
                    dd.join("iommu_group"),
                )
                .unwrap();
            }
            symlink(&dd, s.join("bus/pci/devices").join(d)).unwrap();
        }
        t
    }

    const IR: &str = "  24:  0  IR-PCI-MSIX-0000:00:01.0  0-edge  virtio0-config\n";
    const NO_IR: &str = "  24:  0  PCI-MSIX-0000:00:01.0  0-edge  virtio0-config\n";

    #[test]
    fn verdicts_and_status_values() {
        // (iommus, devices, groups, interrupts, policy, status value, readiness)
        type Case<'a> = (
            &'a [&'a str],
            &'a [(&'a str, Option<&'a str>)],
            &'a [(&'a str, &'a str)],
            &'a str,
            Policy,
            &'a str,
            Result<(), &'a str>,
        );
        let cases: &[Case] = &[
            (
                &["dmar0"],
                &[("0000:00:00.0", Some("0")), ("0000:00:01.0", Some("1"))],
                &[("0", "DMA"), ("1", "DMA")],
                IR,
                Policy::Require,
                "active (dmar0; 2 PCI devices in 2 groups, all translated; interrupt remapping on)",
                Ok(()),
            ),
            (
                &["ivhd0"],
                &[("0000:00:00.0", Some("0")), ("0000:00:01.0", Some("1"))],
                &[("0", "DMA"), ("1", "blocked")],
                NO_IR,
                Policy::Require,
                "active (ivhd0; 2 PCI devices in 2 groups, all translated or blocked; interrupt remapping off)",
                Ok(()),
            ),
            (
                &[],
                &[("0000:00:00.0", None)],
                &[],
                NO_IR,
                Policy::Require,
                "ABSENT — no IOMMU (none under /sys/class/iommu: VT-d / AMD-Vi missing or switched off in the firmware setup)",
                Err("DMA protection absent: no IOMMU (none under /sys/class/iommu: VT-d / AMD-Vi missing or switched off in the firmware setup)"),
            ),
            (
                &[],
                &[("0000:00:00.0", None)],
                &[],
                NO_IR,
                Policy::Warn,
                "ABSENT — no IOMMU (none under /sys/class/iommu: VT-d / AMD-Vi missing or switched off in the firmware setup); running anyway (airlock.dma=warn)",
                Ok(()),
            ),
            (
                &["dmar0"],
                &[("0000:00:00.0", Some("0")), ("0000:00:02.0", Some("1"))],
                &[("0", "DMA"), ("1", "identity")],
                IR,
                Policy::Require,
                "ABSENT — group 1 is identity, not translated (dmar0)",
                Err("DMA protection absent: group 1 is identity, not translated (dmar0)"),
            ),
            (
                &["dmar0"],
                &[("0000:00:00.0", Some("0")), ("0000:00:1f.2", None)],
                &[("0", "DMA-FQ")],
                IR,
                Policy::Require,
                "ABSENT — 0000:00:1f.2 in no IOMMU group, group 0 is DMA-FQ, not translated (dmar0)",
                Err("DMA protection absent: 0000:00:1f.2 in no IOMMU group, group 0 is DMA-FQ, not translated (dmar0)"),
            ),
        ];
        for (iommus, devices, groups, irq, policy, status, ready) in cases {
            let t = fake(iommus, devices, groups);
            let r = probe(t.path(), Some(irq));
            assert_eq!(r.status_value(*policy), *status);
            assert_eq!(r.readiness(*policy), ready.map_err(str::to_string));
            assert_eq!(
                r.warning(*policy).is_some(),
                *policy == Policy::Warn && r.verdict().is_err()
            );
        }
    }

    #[test]
    fn unreadable_interrupts_and_empty_sys() {
        let t = tempfile::tempdir().unwrap();
        let r = probe(t.path(), None);
        assert_eq!(r, Report::default());
        assert!(r.verdict().unwrap_err().starts_with("no IOMMU"));
    }
}
