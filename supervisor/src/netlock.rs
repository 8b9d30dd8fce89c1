//! Network lockdown (DESIGN layer 2): every interface but `lo` is set down
//! and then removed: a device-backed interface by unbinding its driver
//! (`/sys/class/net/IF/device/driver/unbind`), a virtual one by RTM_DELLINK.
//! Then the interfaces are listed again: if any but `lo` remains, the
//! appliance is not ready, and the reason names it (fail closed).
//!
//! On the appliance kernel (CONFIG_INET=n, no NIC drivers) there is nothing
//! to do; this is what protects an image built with a distro kernel.

use crate::rtnl::{Rtnl, RtnlError};
use std::path::Path;
use thiserror::Error;

/// Failing operation of this module.
#[derive(Debug, Error)]
pub enum NetlockError {
    #[error("list {path}: {source}")]
    List {
        path: String,
        source: std::io::Error,
    },
    #[error("read ifindex of {name}: {reason}")]
    Ifindex { name: String, reason: String },
    #[error("set {name} down: {source}")]
    Down { name: String, source: RtnlError },
    #[error("delete {name}: {source}")]
    Delete { name: String, source: RtnlError },
    #[error("unbind {name} from driver {driver}: {source}")]
    Unbind {
        name: String,
        driver: String,
        source: std::io::Error,
    },
    #[error("open rtnetlink: {0}")]
    Rtnl(RtnlError),
}

/// What was done to one interface.
#[derive(Debug)]
pub struct IfOutcome {
    pub name: String,
    /// Backed by a device (has a `device` link) rather than virtual.
    pub physical: bool,
    /// Steps done, e.g. `down`, `deleted`, `unbound from e1000`.
    pub steps: Vec<String>,
    /// Failures, one line each.
    pub errors: Vec<String>,
}

/// The result of the lockdown.
#[derive(Debug, Default)]
pub struct NetReport {
    pub outcomes: Vec<IfOutcome>,
    /// Interfaces other than `lo` still present after the lockdown.
    pub remaining: Vec<String>,
    /// Problems that prevented the lockdown from running at all.
    pub errors: Vec<String>,
}

impl NetReport {
    /// `Ok` when nothing but `lo` remains; otherwise the reason, one line.
    pub fn verdict(&self) -> Result<(), String> {
        if !self.errors.is_empty() && self.remaining.is_empty() {
            // Could not even list: fail closed.
            return Err(format!(
                "network lockdown failed: {}",
                self.errors.join("; ")
            ));
        }
        if self.remaining.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .remaining
            .iter()
            .map(|n| {
                let why = self
                    .outcomes
                    .iter()
                    .rev()
                    .find(|o| &o.name == n)
                    .map(|o| {
                        if o.errors.is_empty() {
                            "still present after removal".to_string()
                        } else {
                            o.errors.join(", ")
                        }
                    })
                    .unwrap_or_else(|| "appeared during lockdown".to_string());
                format!("{n} ({why})")
            })
            .collect();
        Err(format!("network interface(s) remain: {}", parts.join("; ")))
    }
}

/// Names in `class_net` (normally /sys/class/net), sorted.
pub fn list_interfaces(class_net: &Path) -> Result<Vec<String>, NetlockError> {
    let rd = std::fs::read_dir(class_net).map_err(|source| NetlockError::List {
        path: class_net.display().to_string(),
        source,
    })?;
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn ifindex(class_net: &Path, name: &str) -> Result<i32, NetlockError> {
    let s = std::fs::read_to_string(class_net.join(name).join("ifindex")).map_err(|e| {
        NetlockError::Ifindex {
            name: name.into(),
            reason: e.to_string(),
        }
    })?;
    s.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| NetlockError::Ifindex {
            name: name.into(),
            reason: e.to_string(),
        })
}

fn gone(e: &RtnlError) -> bool {
    matches!(e, RtnlError::Refused(nix::Error::ENODEV))
}

fn lock_one(rtnl: &mut Rtnl, class_net: &Path, name: &str) -> IfOutcome {
    let dir = class_net.join(name);
    let device = dir.join("device");
    let mut o = IfOutcome {
        name: name.into(),
        physical: device.exists(),
        steps: Vec::new(),
        errors: Vec::new(),
    };
    let idx = match ifindex(class_net, name) {
        Ok(i) => i,
        Err(e) => {
            if !dir.exists() {
                o.steps.push("vanished".into());
            } else {
                o.errors.push(e.to_string());
            }
            return o;
        }
    };
    match rtnl.set_down(idx) {
        Ok(()) => o.steps.push("down".into()),
        Err(e) if gone(&e) => {
            o.steps.push("vanished".into());
            return o;
        }
        Err(source) => o.errors.push(
            NetlockError::Down {
                name: name.into(),
                source,
            }
            .to_string(),
        ),
    }
    let driver_link = device.join("driver");
    if o.physical && driver_link.exists() {
        let driver = std::fs::read_link(&driver_link)
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into());
        let devname = std::fs::canonicalize(&device)
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        match std::fs::write(driver_link.join("unbind"), devname.as_bytes()) {
            Ok(()) => o.steps.push(format!("unbound from {driver}")),
            Err(source) => o.errors.push(
                NetlockError::Unbind {
                    name: name.into(),
                    driver,
                    source,
                }
                .to_string(),
            ),
        }
    } else {
        match rtnl.delete(idx) {
            Ok(()) => o.steps.push("deleted".into()),
            Err(e) if gone(&e) => o.steps.push("vanished".into()),
            Err(source) => o.errors.push(
                NetlockError::Delete {
                    name: name.into(),
                    source,
                }
                .to_string(),
            ),
        }
    }
    o
}

/// Runs the lockdown on the interfaces of `class_net` (the sysfs view of
/// the caller's network namespace).
pub fn lockdown(class_net: &Path) -> NetReport {
    let mut report = NetReport::default();
    let mut rtnl = match Rtnl::open() {
        Ok(r) => Some(r),
        Err(e) => {
            report.errors.push(NetlockError::Rtnl(e).to_string());
            None
        }
    };
    // A few passes: removing one end of a pair removes the other, and a
    // device may appear while we work.
    for _pass in 0..3 {
        let names = match list_interfaces(class_net) {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let todo: Vec<String> = names.into_iter().filter(|n| n != "lo").collect();
        if todo.is_empty() {
            break;
        }
        let Some(r) = rtnl.as_mut() else {
            report.remaining = todo;
            return report;
        };
        let mut progress = false;
        for name in &todo {
            let o = lock_one(r, class_net, name);
            progress |= o.errors.is_empty();
            report.outcomes.push(o);
        }
        if !progress {
            break;
        }
    }
    match list_interfaces(class_net) {
        Ok(v) => report.remaining = v.into_iter().filter(|n| n != "lo").collect(),
        Err(e) => report.errors.push(e.to_string()),
    }
    report
}

/// Can an IPv4 socket be created? The `inet sockets:` status value.
pub fn inet_sockets() -> String {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    match socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => {
            drop(fd);
            "AVAILABLE — NOT SAFE".to_string()
        }
        Err(e) => format!("refused ({e:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines() {
        let mut r = NetReport::default();
        assert_eq!(r.verdict(), Ok(()));
        r.outcomes.push(IfOutcome {
            name: "tun0".into(),
            physical: false,
            steps: vec!["down".into()],
            errors: vec![
                "delete tun0: EOPNOTSUPP: Operation not supported on transport endpoint".into(),
            ],
        });
        r.outcomes.push(IfOutcome {
            name: "sit0".into(),
            physical: false,
            steps: vec!["down".into(), "deleted".into()],
            errors: vec![],
        });
        r.remaining = vec!["sit0".into(), "tun0".into(), "eth9".into()];
        let v = r.verdict().unwrap_err();
        assert_eq!(v, "network interface(s) remain: sit0 (still present after removal); tun0 (delete tun0: EOPNOTSUPP: Operation not supported on transport endpoint); eth9 (appeared during lockdown)");
    }

    #[test]
    fn unlistable_sysfs_fails_closed() {
        let r = lockdown(Path::new("/nonexistent/class/net"));
        let v = r.verdict().unwrap_err();
        assert!(
            v.starts_with("network lockdown failed: list /nonexistent/class/net: "),
            "{v}"
        );
    }

    #[test]
    fn errno_names() {
        // The status value names the errno the way the brief spells it.
        assert_eq!(
            format!("refused ({:?})", nix::Error::EAFNOSUPPORT),
            "refused (EAFNOSUPPORT)"
        );
    }
}
