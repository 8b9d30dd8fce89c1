//! `airlock-init system-boot [--audit ok|REASON]`: started by PID 1 at
//! every boot once the state partition is mounted, the model check done
//! and the audit log open (or failed: `--audit` carries PID 1's verdict).
//!
//! 1. Not booted through systemd-boot (no `LoaderEntrySelected`): nothing
//!    to do (direct kernel boots in tests).
//! 2. The ESP is mounted read-write; temp files of interrupted slot writes
//!    are removed.
//! 3. Another slot whose tries are used up is a failed update: said on
//!    the consoles and audited, once per entry (`system/reported-<slot>`),
//!    with the reason its own boot recorded (`system/failed-<slot>`).
//! 4. The running entry still has a counter: the health check runs. All
//!    passed: the entry is blessed (renamed without the counter), then the
//!    version committed (anti-rollback), then audited. A failure: the
//!    entry is marked bad at once, the reason recorded, audited, and PID 1
//!    asked to restart into the previous system (only when there is one).
//! 5. A blessed entry whose version is not committed yet (a power cut
//!    between the two steps) is committed now.
//!
//! Output: [`super::job::Msg`] lines for PID 1, which audits and announces.

use super::esp;
use super::health::{self, Ctx};
use super::job::Msg;
use super::slots::{self, EntryName, Life, Slot};
use crate::auditd::Draft;
use airlock_formats::audit::entry::{Action, Outcome};
use airlock_formats::import;
use airlock_formats::manifest::Kind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parses the arguments after `system-boot`: PID 1's audit verdict.
pub fn parse_args(args: &[String]) -> Result<Result<(), String>, String> {
    match args {
        [] => Ok(Ok(())),
        [flag, v] if flag == "--audit" && v == "ok" => Ok(Ok(())),
        [flag, v] if flag == "--audit" => Ok(Err(v.clone())),
        _ => Err(format!(
            "usage: airlock-init system-boot [--audit ok|REASON] (got {args:?})"
        )),
    }
}

pub fn main_from_args(args: &[String]) -> ExitCode {
    let audit = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("airlock-init: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = |m: Msg| println!("{}", m.encode());
    run(audit, &mut out);
    ExitCode::SUCCESS
}

/// The reason file of a slot's failed health check.
fn failed_file(slot: Slot) -> PathBuf {
    super::state_dir().join(format!("failed-{}", slot.as_str()))
}

/// The marker of a reported fallback.
fn reported_file(slot: Slot) -> PathBuf {
    super::state_dir().join(format!("reported-{}", slot.as_str()))
}

/// Writes `text` to `path` atomically (temp, fsync, rename, fsync dir).
fn write_small(path: &Path, text: &str) -> Result<(), String> {
    let dir = path.parent().ok_or("no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no file name")?;
    airlock_formats::fsutil::write_atomic(dir, name, text.as_bytes()).map_err(|e| e.to_string())
}

/// `VERSION REASON` of a slot's recorded failure.
pub fn recorded_failure(slot: Slot) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(failed_file(slot)).ok()?;
    let (v, why) = text.trim_end().split_once(' ')?;
    Some((v.parse().ok()?, why.to_string()))
}

fn notice_and_audit(out: &mut dyn FnMut(Msg), text: String, d: Draft) {
    out(Msg::Notice(text));
    out(Msg::Audit(d));
}

fn detail(s: &str) -> String {
    crate::screen::line(s).chars().take(250).collect()
}

/// The whole boot step; every outcome goes to `out`.
pub fn run(audit: Result<(), String>, out: &mut dyn FnMut(Msg)) {
    let efi = crate::state::loader_text(
        Path::new(crate::state::EFIVARS),
        crate::state::LOADER_ENTRY_SELECTED,
    )
    .ok()
    .flatten();
    let Some(running) = efi.as_deref().and_then(slots::slot_of_entry_id) else {
        out(Msg::Status(match efi {
            None => "no boot slots (not booted through systemd-boot)".into(),
            Some(id) => format!(
                "booted entry '{}' is not a slot of this appliance",
                crate::screen::line(&id)
            ),
        }));
        return;
    };
    let mounted = esp::locate().and_then(|dev| esp::mount_esp(&dev, true).map(|m| (dev, m)));
    let (dev, esp) = match mounted {
        Ok(m) => m,
        Err(e) => {
            out(Msg::Status(format!(
                "slot {}; ESP unusable: {e}",
                running.as_str()
            )));
            out(Msg::Notice(format!(
                "system: the boot slots cannot be checked: {e}"
            )));
            return;
        }
    };
    match esp::clean_temp(&esp) {
        Ok(removed) => {
            for n in removed {
                out(Msg::Log(format!(
                    "removed {n}, left by an interrupted slot write"
                )));
            }
        }
        Err(e) => out(Msg::Log(format!("clean the ESP: {e}"))),
    }
    let entries = match esp::entries(&esp.linux_dir()) {
        Ok(e) => e,
        Err(e) => {
            out(Msg::Status(format!("slot {}; {e}", running.as_str())));
            return;
        }
    };
    report_fallbacks(running, &entries, out);
    let Some((me, path)) = entries.iter().find(|(n, _)| n.slot == running).cloned() else {
        out(Msg::Status(format!(
            "slot {} has no entry on the ESP",
            running.as_str()
        )));
        return;
    };
    let version = esp::version_of(&path);
    match me.life() {
        Life::Good => {
            if let Some(v) = version {
                // A power cut between blessing and committing: commit now.
                match commit(v, &path) {
                    Ok(true) => out(Msg::Audit(
                        Draft::system(Action::SystemCommit, Outcome::Ok, None).detail(detail(
                            &format!(
                                "version {v} (slot {}, blessed earlier) committed",
                                running.as_str()
                            ),
                        )),
                    )),
                    Ok(false) => {}
                    Err(e) => out(Msg::Log(format!("commit version {v}: {e}"))),
                }
            }
            out(Msg::Status(status_line(running, version, "good")));
        }
        Life::Trying { .. } | Life::Bad { .. } => {
            // The ESP is not held during the checks (a minute or more):
            // `system` on a console may look meanwhile.
            drop(esp);
            check_and_decide(&dev, running, me, version, &entries, audit, out);
        }
    }
}

fn status_line(slot: Slot, version: Option<u64>, what: &str) -> String {
    match version {
        Some(v) => format!("version {v}, slot {}, {what}", slot.as_str()),
        None => format!("slot {}, {what} (version unreadable)", slot.as_str()),
    }
}

/// Says once per failed entry that an update fell back.
fn report_fallbacks(running: Slot, entries: &[(EntryName, PathBuf)], out: &mut dyn FnMut(Msg)) {
    let me_version = entries
        .iter()
        .find(|(n, _)| n.slot == running)
        .and_then(|(_, p)| esp::version_of(p));
    for (name, path) in entries {
        let Life::Bad { done } = name.life() else {
            continue;
        };
        if name.slot == running {
            continue;
        }
        let version = esp::version_of(path);
        let key = format!("{} {}", name.file_name(), version.unwrap_or(0));
        let marker = reported_file(name.slot);
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
            continue;
        }
        let why = match (recorded_failure(name.slot), version) {
            (Some((v, why)), Some(w)) if v == w => format!(": {why}"),
            _ => ": it never reached its health check (it did not boot, or hung)".to_string(),
        };
        let text = format!(
            "system: the update to version {} in slot {} failed after {done} tr{}{why}; \
             running version {} from slot {}. The officer may 'system retry' or 'system clear'.",
            version.map_or("?".into(), |v| v.to_string()),
            name.slot.as_str(),
            if done == 1 { "y" } else { "ies" },
            me_version.map_or("?".into(), |v| v.to_string()),
            running.as_str(),
        );
        let d = Draft::system(Action::SystemFallback, Outcome::Failed, None)
            .reason("update-failed")
            .detail(detail(&text));
        notice_and_audit(out, text, d);
        if let Err(e) = write_small(&marker, &key) {
            out(Msg::Log(format!("record the report: {e}")));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_and_decide(
    dev: &str,
    running: Slot,
    me: EntryName,
    version: Option<u64>,
    entries: &[(EntryName, PathBuf)],
    audit: Result<(), String>,
    out: &mut dyn FnMut(Msg),
) {
    let policy =
        crate::identity::policy::Policy::from_file(Path::new(crate::identity::policy::POLICY_PATH))
            .unwrap_or_default();
    let demo = super::running_variant() == "demo";
    let fault = crate::cmdline::read_raw_value("airlock.test.fault");
    let ctx = Ctx {
        store: super::store_dir(),
        record: PathBuf::from(crate::model_check::record::RECORD_DIR),
        audit,
        worker_memory: policy.job_memory_mib << 20,
        fault_model: demo && fault.as_deref() == Some("health"),
    };
    out(Msg::Status(status_line(
        running,
        version,
        "health check running",
    )));
    out(Msg::Notice(format!(
        "system: version {} (slot {}) is on trial: running its health check",
        version.map_or("?".into(), |v| v.to_string()),
        running.as_str()
    )));
    let outcomes = health::run(&ctx);
    for o in &outcomes {
        out(Msg::Log(match &o.result {
            Ok(s) => format!("health {}: ok: {s}", o.name),
            Err(e) => format!("health {}: FAILED: {e}", o.name),
        }));
    }
    let v_text = version.map_or("?".into(), |v| v.to_string());
    let esp = match esp::mount_esp(dev, true) {
        Ok(m) => m,
        Err(e) => {
            out(Msg::Status(status_line(running, version, "NOT blessed")));
            let text = format!(
                "system: version {v_text}: the ESP cannot be written after the health check: {e}"
            );
            let d = Draft::system(Action::SystemCheck, Outcome::Failed, None)
                .reason("bless-failed")
                .detail(detail(&text));
            return notice_and_audit(out, text, d);
        }
    };
    let esp = &esp;
    let dir = esp.linux_dir();
    match (health::verdict(&outcomes), version) {
        (None, Some(v)) => {
            let blessed = me.blessed().file_name();
            if let Err(e) = esp::rename(esp, &dir, &me.file_name(), &blessed) {
                out(Msg::Status(status_line(running, version, "NOT blessed")));
                let text = format!(
                    "system: version {v} passed its health check but could not be blessed: {e}"
                );
                let d = Draft::system(Action::SystemCheck, Outcome::Failed, None)
                    .reason("bless-failed")
                    .detail(detail(&text));
                return notice_and_audit(out, text, d);
            }
            let passed: Vec<&str> = outcomes.iter().map(|o| o.name).collect();
            let committed = commit(v, &dir.join(&blessed));
            let text = match &committed {
                Ok(_) => format!(
                    "system: version {v} (slot {}) passed its health check ({}): blessed and committed",
                    running.as_str(),
                    passed.join(", ")
                ),
                Err(e) => format!(
                    "system: version {v} (slot {}) passed its health check and was blessed, \
                     but its commit failed: {e} (tried again at the next boot)",
                    running.as_str()
                ),
            };
            let outcome = if committed.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
            let d = Draft::system(Action::SystemCommit, outcome, None).detail(detail(&text));
            notice_and_audit(out, text, d);
            out(Msg::Status(status_line(
                running,
                version,
                "good (blessed this boot)",
            )));
        }
        (verdict, _) => {
            let why = verdict.unwrap_or_else(|| "its system version is unreadable".into());
            // Another entry that is not bad: the next boot takes it.
            let fallback = entries
                .iter()
                .any(|(n, _)| n.slot != running && !matches!(n.life(), Life::Bad { .. }));
            if let Err(e) =
                write_small(&failed_file(running), &format!("{v_text} {}", detail(&why)))
            {
                out(Msg::Log(format!("record the failure: {e}")));
            }
            let marked = if fallback {
                esp::rename(esp, &dir, &me.file_name(), &me.marked_bad().file_name())
            } else {
                Ok(())
            };
            let text = match (&marked, fallback) {
                (Ok(()), true) => format!(
                    "system: version {v_text} (slot {}) FAILED its health check: {why}; \
                     restarting into the previous system",
                    running.as_str()
                ),
                (Ok(()), false) => format!(
                    "system: version {v_text} (slot {}) FAILED its health check: {why}; \
                     there is no other system to fall back to: NOT blessed",
                    running.as_str()
                ),
                (Err(e), _) => format!(
                    "system: version {v_text} (slot {}) FAILED its health check: {why}; \
                     marking it bad failed ({e}): its remaining tries will be used",
                    running.as_str()
                ),
            };
            let d = Draft::system(Action::SystemCheck, Outcome::Failed, None)
                .reason("health-check-failed")
                .detail(detail(&text));
            notice_and_audit(out, text, d);
            out(Msg::Status(status_line(
                running,
                version,
                "FAILED its health check",
            )));
            if fallback {
                out(Msg::Reboot(
                    "the health check of the new system failed".into(),
                ));
            }
        }
    }
}

/// Commits `version` (the running system's): a deferred import of it, or
/// the flashed image (its UKI's SHA-256 stands for the manifest).
fn commit(version: u64, uki: &Path) -> Result<bool, String> {
    let store = super::store_dir();
    if !store.join(airlock_formats::state::STATE_FILE).is_file() {
        airlock_formats::store::init(&store).map_err(|e| format!("create the store: {e}"))?;
    }
    let name = super::BUNDLE_NAME;
    if import::is_deferred(&store, Kind::System, name, version).map_err(|e| e.to_string())? {
        import::commit_deferred(&store, Kind::System, name, version).map_err(|e| e.to_string())?;
        return Ok(true);
    }
    let f = std::fs::File::open(uki).map_err(|e| format!("read {}: {e}", uki.display()))?;
    let sha = airlock_formats::audit::entry::sha256_hex_of_reader(f)
        .map_err(|e| format!("read {}: {e}", uki.display()))?;
    import::commit_running(&store, Kind::System, name, version, &sha).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_pid1s_audit_verdict() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&s(&[])), Ok(Ok(())));
        assert_eq!(parse_args(&s(&["--audit", "ok"])), Ok(Ok(())));
        assert_eq!(
            parse_args(&s(&["--audit", "the log failed"])),
            Ok(Err("the log failed".into()))
        );
        assert!(parse_args(&s(&["--x"])).is_err());
    }
}
