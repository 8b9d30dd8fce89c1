//! Hardening sysctls: policy as data, each written under /proc/sys and read
//! back. A key that does not exist means the kernel was built without that
//! feature, so the risk it guards against does not exist either: reported
//! as `absent`, not a failure. A key that exists but does not hold the value
//! after writing is a failure, and the appliance refuses "ready".

use std::path::Path;
use thiserror::Error;

/// One hardening setting.
#[derive(Debug)]
pub struct Sysctl {
    /// Dotted name, e.g. `kernel.kptr_restrict`.
    pub key: &'static str,
    pub value: &'static str,
}

/// The policy. One comment per rule: what it prevents.
pub const POLICY: &[Sysctl] = &[
    // Kernel pointers are hidden from everyone, root included (%pK -> 0): no KASLR leaks via /proc.
    Sysctl {
        key: "kernel.kptr_restrict",
        value: "2",
    },
    // The kernel log (which may hold addresses and device details) needs CAP_SYSLOG.
    Sysctl {
        key: "kernel.dmesg_restrict",
        value: "1",
    },
    // Yama: no process may ptrace another, and the setting cannot be lowered until reboot.
    Sysctl {
        key: "kernel.yama.ptrace_scope",
        value: "3",
    },
    // bpf(2) is for CAP_SYS_ADMIN only, permanently (2 would allow switching back). Absent when BPF_SYSCALL=n.
    Sysctl {
        key: "kernel.unprivileged_bpf_disabled",
        value: "1",
    },
    // Magic SysRq keys off: a keyboard cannot dump memory/registers or kill processes.
    Sysctl {
        key: "kernel.sysrq",
        value: "0",
    },
    // Core dumps go to a helper that does not exist: no dump of a worker's memory lands anywhere.
    Sysctl {
        key: "kernel.core_pattern",
        value: "|/bin/false",
    },
    // No core dumps of processes that changed credentials (the sandboxed worker).
    Sysctl {
        key: "fs.suid_dumpable",
        value: "0",
    },
    // Were a dump ever written, one per pid rather than overwriting (defence in depth for the rule above).
    Sysctl {
        key: "kernel.core_uses_pid",
        value: "1",
    },
    // perf events for CAP_PERFMON only (side channels, kernel attack surface). Absent when PERF_EVENTS=n.
    Sysctl {
        key: "kernel.perf_event_paranoid",
        value: "3",
    },
    // kexec refused even to root, permanently. Absent when KEXEC=n.
    Sysctl {
        key: "kernel.kexec_load_disabled",
        value: "1",
    },
    // io_uring off for everyone (large attack surface, bypasses seccomp). Absent when IO_URING=n.
    Sysctl {
        key: "kernel.io_uring_disabled",
        value: "2",
    },
    // userfaultfd only for CAP_SYS_PTRACE (a classic exploit primitive). Absent when USERFAULTFD=n.
    Sysctl {
        key: "vm.unprivileged_userfaultfd",
        value: "0",
    },
    // Full address-space layout randomisation.
    Sysctl {
        key: "kernel.randomize_va_space",
        value: "2",
    },
    // Following symlinks / hardlinking files of other users in sticky dirs is refused (/tmp races).
    Sysctl {
        key: "fs.protected_symlinks",
        value: "1",
    },
    Sysctl {
        key: "fs.protected_hardlinks",
        value: "1",
    },
    // O_CREAT on FIFOs and regular files of other users in sticky dirs is refused.
    Sysctl {
        key: "fs.protected_fifos",
        value: "2",
    },
    Sysctl {
        key: "fs.protected_regular",
        value: "2",
    },
    // Line disciplines are not auto-loaded by unprivileged TIOCSETD. Absent without module support.
    Sysctl {
        key: "dev.tty.ldisc_autoload",
        value: "0",
    },
    // Seccomp filters run JIT-compiled (kernel BPF_JIT=y): read back so an interpreter
    // fallback (slower for the worker's ~300k syscalls/s) is seen. Absent when BPF_JIT=n.
    Sysctl {
        key: "net.core.bpf_jit_enable",
        value: "1",
    },
    // Constant blinding for every JIT-compiled filter, privileged or not (JIT spraying).
    Sysctl {
        key: "net.core.bpf_jit_harden",
        value: "2",
    },
    // memfds are never executable: memfd_create(MFD_EXEC) fails with EACCES and a memfd
    // created without flags gets MFD_NOEXEC_SEAL (no fileless exec of downloaded or written
    // code, bypassing the noexec mounts). Per pid namespace and inherited: the worker's new
    // pid namespace cannot lower it. Nothing we run asks for MFD_EXEC (docs/supervisor.md).
    Sysctl {
        key: "vm.memfd_noexec",
        value: "2",
    },
];

/// Failing operation for one setting.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SysctlError {
    #[error("write {key}: {reason}")]
    Write { key: String, reason: String },
    #[error("read back {key}: {reason}")]
    Read { key: String, reason: String },
    #[error("{key} is {got:?} after writing {want:?}")]
    Mismatch {
        key: String,
        want: String,
        got: String,
    },
}

/// Result of one setting.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written and read back equal.
    Set,
    /// The key does not exist on this kernel.
    Absent,
    Failed(SysctlError),
}

/// One line of the lockdown report.
#[derive(Debug)]
pub struct Applied {
    pub key: &'static str,
    pub value: &'static str,
    pub outcome: Outcome,
}

/// Path of a dotted key under a sysctl root (`kernel.yama.ptrace_scope` ->
/// `kernel/yama/ptrace_scope`).
pub fn key_path(root: &Path, key: &str) -> std::path::PathBuf {
    root.join(key.replace('.', "/"))
}

fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes and reads back one setting under `root` (normally /proc/sys).
pub fn apply_one(root: &Path, s: &Sysctl) -> Outcome {
    let path = key_path(root, s.key);
    if !path.exists() {
        return Outcome::Absent;
    }
    if let Err(e) = std::fs::write(&path, format!("{}\n", s.value)) {
        return Outcome::Failed(SysctlError::Write {
            key: s.key.into(),
            reason: e.to_string(),
        });
    }
    match std::fs::read_to_string(&path) {
        Err(e) => Outcome::Failed(SysctlError::Read {
            key: s.key.into(),
            reason: e.to_string(),
        }),
        Ok(got) if normalise(&got) == normalise(s.value) => Outcome::Set,
        Ok(got) => Outcome::Failed(SysctlError::Mismatch {
            key: s.key.into(),
            want: s.value.into(),
            got: normalise(&got),
        }),
    }
}

/// Applies a whole policy under `root`.
pub fn apply(root: &Path, policy: &'static [Sysctl]) -> Vec<Applied> {
    policy
        .iter()
        .map(|s| Applied {
            key: s.key,
            value: s.value,
            outcome: apply_one(root, s),
        })
        .collect()
}

/// Failures (for the readiness decision).
pub fn failures(report: &[Applied]) -> Vec<String> {
    report
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Failed(e) => Some(e.to_string()),
            _ => None,
        })
        .collect()
}

/// (set, absent, failed) counts of a report.
pub fn counts(report: &[Applied]) -> (usize, usize, usize) {
    let set = report.iter().filter(|a| a.outcome == Outcome::Set).count();
    let absent = report
        .iter()
        .filter(|a| a.outcome == Outcome::Absent)
        .count();
    (set, absent, report.len() - set - absent)
}

/// `status` lines: a summary and one line per setting.
pub fn status_lines(report: &[Applied]) -> Vec<(String, String)> {
    let (set, absent, failed) = counts(report);
    let mut out = vec![(
        "lockdown".to_string(),
        if failed == 0 {
            format!("{set} sysctls set, {absent} absent from this kernel, 0 failed")
        } else {
            format!("{set} sysctls set, {absent} absent from this kernel, {failed} FAILED")
        },
    )];
    for a in report {
        let v = match &a.outcome {
            Outcome::Set => a.value.to_string(),
            Outcome::Absent => "absent (kernel built without it)".to_string(),
            Outcome::Failed(e) => format!("FAILED: {e}"),
        };
        out.push((format!("sysctl {}", a.key), v));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    static TWO: &[Sysctl] = &[
        Sysctl {
            key: "kernel.kptr_restrict",
            value: "2",
        },
        Sysctl {
            key: "kernel.unprivileged_bpf_disabled",
            value: "1",
        },
    ];

    fn fake_root(keys: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for k in keys {
            let p = key_path(t.path(), k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "0\n").unwrap();
        }
        t
    }

    #[test]
    fn key_paths() {
        assert_eq!(
            key_path(Path::new("/proc/sys"), "kernel.yama.ptrace_scope"),
            Path::new("/proc/sys/kernel/yama/ptrace_scope")
        );
    }

    #[test]
    fn applies_and_reads_back() {
        let t = fake_root(&["kernel.kptr_restrict", "kernel.unprivileged_bpf_disabled"]);
        let r = apply(t.path(), TWO);
        assert!(r.iter().all(|a| a.outcome == Outcome::Set), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(t.path().join("kernel/kptr_restrict")).unwrap(),
            "2\n"
        );
        assert!(failures(&r).is_empty());
        assert_eq!(
            status_lines(&r)[0].1,
            "2 sysctls set, 0 absent from this kernel, 0 failed"
        );
    }

    #[test]
    fn missing_key_is_absent_not_failed() {
        let t = fake_root(&["kernel.kptr_restrict"]);
        let r = apply(t.path(), TWO);
        assert_eq!(r[1].outcome, Outcome::Absent);
        let lines = status_lines(&r);
        assert!(lines.contains(&(
            "sysctl kernel.unprivileged_bpf_disabled".into(),
            "absent (kernel built without it)".into()
        )));
        assert!(failures(&r).is_empty());
    }

    #[test]
    fn unwritable_key_fails_with_reason() {
        let t = fake_root(&["kernel.unprivileged_bpf_disabled"]);
        // A directory where the value file should be: the write fails.
        std::fs::create_dir_all(t.path().join("kernel/kptr_restrict")).unwrap();
        let r = apply(t.path(), TWO);
        let f = failures(&r);
        assert_eq!(f.len(), 1);
        assert!(f[0].starts_with("write kernel.kptr_restrict: "), "{f:?}");
        assert!(status_lines(&r)[0].1.ends_with("1 FAILED"));
    }

    #[test]
    fn mismatch_on_read_back_fails() {
        // /dev/null swallows the write and reads back empty: a kernel that
        // silently ignored the value would look like this.
        let t = fake_root(&["kernel.unprivileged_bpf_disabled"]);
        std::fs::create_dir_all(t.path().join("kernel")).unwrap();
        std::os::unix::fs::symlink("/dev/null", t.path().join("kernel/kptr_restrict")).unwrap();
        let r = apply(t.path(), TWO);
        assert_eq!(
            r[0].outcome,
            Outcome::Failed(SysctlError::Mismatch {
                key: "kernel.kptr_restrict".into(),
                want: "2".into(),
                got: "".into()
            })
        );
        assert_eq!(
            failures(&r),
            vec!["kernel.kptr_restrict is \"\" after writing \"2\"".to_string()]
        );
        assert_eq!(normalise("4\t4\t1\t7\n"), "4 4 1 7");
    }

    #[test]
    fn policy_is_well_formed() {
        for s in POLICY {
            assert!(!s.key.contains('/') && s.key.contains('.'), "{}", s.key);
            assert!(!s.value.is_empty());
        }
    }
}
