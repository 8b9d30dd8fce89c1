//! The `status` report: `key: value` lines in a fixed order, plus the
//! probes of kernel facts it shows (LSMs, Landlock ABI, seccomp, RSS).

use std::path::Path;

/// An ordered list of `key: value` facts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    lines: Vec<(String, String)>,
}

impl Report {
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.lines.push((key.into(), value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// One line per fact. Keys and values pass `screen::line`: a value
    /// holding a newline, ESC or any other unsafe character is shown
    /// escaped, so it can neither forge another `key: value` line nor steer
    /// the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.lines {
            out.push_str(&crate::screen::line(k));
            out.push_str(": ");
            out.push_str(&crate::screen::line(v.trim_end()));
            out.push('\n');
        }
        out
    }
}

/// `yes` or `no — reason`.
pub fn ready_value(verdict: &Result<(), String>) -> String {
    match verdict {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no — {why}"),
    }
}

/// Active LSMs from securityfs, e.g. `capability,landlock,lockdown,yama`.
pub fn lsm(securityfs: &Path) -> String {
    match std::fs::read_to_string(securityfs.join("lsm")) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        Ok(_) => "none".to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Landlock ABI version, or why there is none.
pub fn landlock_abi() -> String {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a NULL attribute pointer, size 0
    // and the VERSION flag only returns the ABI number; it reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r >= 1 {
        r.to_string()
    } else {
        match nix::Error::last() {
            nix::Error::EOPNOTSUPP => "none (disabled at boot)".to_string(),
            nix::Error::ENOSYS => "none (kernel built without Landlock)".to_string(),
            e => format!("none ({e:?})"),
        }
    }
}

/// Whether seccomp filters can be installed (the kernel lists its filter
/// actions only when CONFIG_SECCOMP_FILTER is set).
pub fn seccomp(proc_root: &Path) -> String {
    match std::fs::read_to_string(proc_root.join("sys/kernel/seccomp/actions_avail")) {
        Ok(a) if a.split_whitespace().any(|w| w == "errno") => "available".to_string(),
        Ok(a) => format!("limited ({})", a.trim()),
        Err(_) => "unavailable".to_string(),
    }
}

/// The `recipients` value: the fingerprints the image's recipient files in
/// `dir` are named by (`<FINGERPRINT>.asc`, see
/// `document::recipients::IMAGE_DIR`), sorted, plus how many other entries
/// there are. Only names are read: PID 1 never parses OpenPGP (the build
/// checked the keys with gpg; the key holder parses them when sealing).
pub fn recipients(dir: &Path) -> String {
    const NONE: &str = "none (answers cannot be sealed; the image was built without --recipients)";
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return NONE.to_string(),
        Err(e) => return format!("unknown ({e})"),
    };
    let mut fprs = Vec::new();
    let mut unreadable = 0usize;
    for entry in entries {
        let named = entry.ok().and_then(|e| {
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            let name = e.file_name().into_string().ok()?;
            let fpr = crate::document::recipients::named_fingerprint(&name)?;
            is_file.then(|| fpr.to_string())
        });
        match named {
            Some(fpr) => fprs.push(fpr),
            None => unreadable += 1,
        }
    }
    fprs.sort();
    match (fprs.is_empty(), unreadable) {
        (true, 0) => NONE.to_string(),
        (true, n) => format!("none (answers cannot be sealed); {n} unreadable"),
        (false, 0) => fprs.join(", "),
        (false, n) => format!("{}; {n} unreadable", fprs.join(", ")),
    }
}

/// A `VmRSS:` style value in KiB from a /proc/PID/status text.
pub fn status_kib(status_text: &str, key: &str) -> Option<u64> {
    status_text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// This process's resident set in KiB.
pub fn self_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kib(&s, "VmRSS"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renders_key_value_lines() {
        let mut r = Report::default();
        r.push("version", "0.1.0");
        r.push(
            "ready",
            ready_value(&Err("network interface(s) remain: eth0 (x)".into())),
        );
        r.push("weird", "a\nready: yes\r");
        r.push("label\x1b[2J", "\u{9b}31m");
        assert_eq!(
            r.render(),
            "version: 0.1.0\nready: no — network interface(s) remain: eth0 (x)\n\
             weird: a\\x0aready: yes\nlabel\\x1b[2J: \\x9b31m\n"
        );
        assert_eq!(r.get("version"), Some("0.1.0"));
        assert_eq!(ready_value(&Ok(())), "yes");
    }

    #[test]
    fn proc_status_values() {
        let s = "Name:\tairlock-init\nVmRSS:\t    1234 kB\nSeccomp:\t0\n";
        assert_eq!(status_kib(s, "VmRSS"), Some(1234));
        assert_eq!(status_kib(s, "VmHWM"), None);
        assert!(self_rss_kib().unwrap() > 0);
    }

    #[test]
    fn recipients_from_file_names() {
        const A: &str = "0ED596949EA0F9A4EB49E806F2704D18E5C4E7AC";
        const B: &str = "0F87FC435AF3F3A0A10B7F366D0108A6E2DC6541";
        let none = "none (answers cannot be sealed; the image was built without --recipients)";
        // (files, directories, status value); None: no directory at all
        type Case<'a> = (Option<&'a [&'a str]>, &'a [&'a str], String);
        let cases: &[Case] = &[
            (None, &[], none.into()),
            (Some(&[]), &[], none.into()),
            (Some(&[&format!("{A}.asc")]), &[], A.into()),
            (
                Some(&[&format!("{B}.asc"), &format!("{A}.asc")]),
                &[],
                format!("{A}, {B}"),
            ),
            (
                Some(&[
                    &format!("{B}.asc"),
                    "README",
                    &format!("{}.asc", A.to_lowercase()),
                ]),
                &[&format!("{A}.asc")],
                format!("{B}; 3 unreadable"),
            ),
            (
                Some(&["admin.asc", &format!("{A}.gpg")]),
                &[],
                "none (answers cannot be sealed); 2 unreadable".into(),
            ),
        ];
        for (files, dirs, want) in cases {
            let t = tempfile::tempdir().unwrap();
            let dir = t.path().join("recipients");
            if let Some(files) = files {
                std::fs::create_dir(&dir).unwrap();
                for f in *files {
                    // the contents are never read
                    std::fs::write(dir.join(f), b"not a key").unwrap();
                }
                for d in *dirs {
                    std::fs::create_dir(dir.join(d)).unwrap();
                }
            }
            assert_eq!(recipients(&dir), *want, "{files:?} {dirs:?}");
        }
    }

    #[test]
    fn kernel_facts_on_this_host() {
        // The CI machine has Landlock and seccomp (see issue 3).
        let abi: u32 = landlock_abi().parse().expect("landlock ABI number");
        assert!(abi >= 1);
        assert_eq!(seccomp(Path::new("/proc")), "available");
        let t = tempfile::tempdir().unwrap();
        assert!(lsm(t.path()).starts_with("unknown ("));
        std::fs::write(t.path().join("lsm"), "capability,landlock,yama\n").unwrap();
        assert_eq!(lsm(t.path()), "capability,landlock,yama");
    }
}
