//! The console's `system` commands: `system [show]` (any account),
//! `system reboot-to-new`, `system retry`, `system clear` (officer).

use super::esp::{self, EspError, Mounted};
use super::slots::{self, EntryName, Known, Life, Slot};
use crate::auditd::Draft;
use crate::console::Console;
use airlock_formats::audit::entry::{Action, Outcome};
use airlock_formats::manifest::Kind;
use airlock_formats::state::State;
use std::path::PathBuf;

/// Why a `system` command cannot look at the slots.
/// The running slot, the mounted ESP and its slot entries.
type Slots = (Slot, Mounted, Vec<(EntryName, PathBuf)>);

fn slots_now(write: bool) -> Result<Slots, String> {
    let running = super::running_slot().ok_or(
        "this boot did not come through systemd-boot (direct kernel boot): there are no slots",
    )?;
    let dev = esp::locate().map_err(|e| e.to_string())?;
    let m = esp::mount_esp(&dev, write).map_err(|e| e.to_string())?;
    let entries = esp::entries(&m.linux_dir()).map_err(|e| e.to_string())?;
    Ok((running, m, entries))
}

/// The committed (anti-rollback) system version.
pub fn committed() -> Option<u64> {
    State::load(&super::store_dir())
        .ok()?
        .get(Kind::System, super::BUNDLE_NAME)
        .map(|e| e.version)
}

fn version_text(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// One line per slot, then the next boot.
pub fn describe(running: Slot, known: &[Known], committed: Option<u64>) -> String {
    let mut out = String::new();
    for slot in Slot::ALL {
        let line = match known.iter().find(|k| k.name.slot == slot) {
            None => format!("slot {}: empty", slot.as_str()),
            Some(k) => {
                let v = version_text(k.version);
                let mut state = match k.name.life() {
                    Life::Good => "good".to_string(),
                    Life::Trying { left, done } if slot == running => {
                        format!(
                            "on trial ({left} tr{} left after this one, {done} used)",
                            plural(left)
                        )
                    }
                    Life::Trying { left, .. } => {
                        format!("pending ({left} tr{} left)", plural(left))
                    }
                    Life::Bad { done } => {
                        let why = super::boot::recorded_failure(slot)
                            .filter(|(rv, _)| Some(*rv) == k.version)
                            .map(|(_, w)| format!(": {w}"))
                            .unwrap_or_default();
                        format!("FAILED after {done} tr{}{why}", plural(done))
                    }
                };
                if slot == running {
                    state.push_str(", running");
                }
                format!("slot {}: version {v}, {state}", slot.as_str())
            }
        };
        out.push_str(&crate::screen::line(&line));
        out.push('\n');
    }
    out.push_str(&format!(
        "committed version (anti-rollback floor): {}\n",
        committed.map_or("none yet".into(), |v| v.to_string())
    ));
    match slots::next_boot(known) {
        Some(k) => out.push_str(&format!(
            "next boot: slot {} (version {}){}\n",
            k.name.slot.as_str(),
            version_text(k.version),
            match k.name.life() {
                Life::Trying { .. } if k.name.slot != running => ", a new system on trial",
                Life::Bad { .. } => ", a FAILED system: nothing better is left",
                _ => "",
            }
        )),
        None => out.push_str("next boot: nothing bootable on the ESP\n"),
    }
    out
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}

impl Console {
    /// `system [show]`.
    pub(crate) fn cmd_system_show(&mut self) {
        match slots_now(false) {
            Ok((running, m, entries)) => {
                let known = esp::known(&entries);
                drop(m);
                let text = describe(running, &known, committed());
                self.out(&text);
            }
            Err(e) => self.out(&format!("system: {e}\n")),
        }
    }

    /// `system reboot-to-new`: `true` when the restart was asked for.
    pub(crate) fn cmd_system_reboot_to_new(&mut self) -> bool {
        let (running, m, entries) = match slots_now(false) {
            Ok(x) => x,
            Err(e) => {
                self.out(&format!("system reboot-to-new: {e}\n"));
                return false;
            }
        };
        let known = esp::known(&entries);
        drop(m);
        match slots::next_boot(&known) {
            Some(k) if k.name.slot != running && matches!(k.name.life(), Life::Trying { .. }) => {
                self.out(&format!(
                    "restarting to try version {} in slot {}\n",
                    version_text(k.version),
                    k.name.slot.as_str()
                ));
                self.request_reboot()
            }
            _ => {
                self.out("system reboot-to-new: no new system is pending (install one with 'import'); nothing changed\n");
                false
            }
        }
    }

    /// The failed other slot, for `retry` and `clear`.
    fn failed_slot(&mut self, cmd: &str) -> Option<(Mounted, EntryName, Option<u64>)> {
        let (running, m, entries) = match slots_now(true) {
            Ok(x) => x,
            Err(e) => {
                self.out(&format!("{cmd}: {e}\n"));
                return None;
            }
        };
        let failed = entries
            .iter()
            .find(|(n, _)| n.slot != running && matches!(n.life(), Life::Bad { .. }));
        match failed {
            Some((n, p)) => Some((m, *n, esp::version_of(p))),
            None => {
                self.out(&format!(
                    "{cmd}: no failed system in the other slot; nothing changed\n"
                ));
                None
            }
        }
    }

    /// Audits and reports a change of the failed slot (`op`: retry, clear).
    fn slot_changed(&mut self, op: &str, r: Result<(), EspError>, text: &str, shown: &str) {
        let (me, role) = self.who();
        match r {
            Ok(()) => {
                let d = Draft::by(&me, role, Action::SystemSlot, Outcome::Ok)
                    .detail(format!("{op}: {text}"));
                self.audited(d, shown);
            }
            Err(e) => {
                let d = Draft::by(&me, role, Action::SystemSlot, Outcome::Failed)
                    .reason("esp-write-failed")
                    .detail(
                        crate::screen::line(&format!("{op}: {e}"))
                            .chars()
                            .take(250)
                            .collect::<String>(),
                    );
                let _ = self.audit(d);
                self.out(&format!("system {op} failed: {e}\n"));
            }
        }
    }

    /// `system retry`.
    pub(crate) fn cmd_system_retry(&mut self) {
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("system retry refused: {why}\n"));
        }
        let Some((m, name, version)) = self.failed_slot("system retry") else {
            return;
        };
        if let (Some(v), Some(c)) = (version, committed()) {
            if v < c {
                return self.out(&format!(
                    "system retry refused: version {v} is below the committed version {c}; nothing changed\n"
                ));
            }
        }
        let fresh = EntryName::fresh(name.slot, slots::TRIES);
        let r = esp::rename(&m, &m.linux_dir(), &name.file_name(), &fresh.file_name());
        drop(m);
        let text = format!(
            "slot {} (version {}) gets {} tries again",
            name.slot.as_str(),
            version_text(version),
            slots::TRIES
        );
        let shown = format!("{text}; 'system reboot-to-new' tries it");
        self.slot_changed("retry", r, &text, &shown);
    }

    /// `system clear`.
    pub(crate) fn cmd_system_clear(&mut self) {
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("system clear refused: {why}\n"));
        }
        let Some((m, name, version)) = self.failed_slot("system clear") else {
            return;
        };
        let r = esp::remove(&m, &m.linux_dir(), &name.file_name()).map(drop);
        drop(m);
        let text = format!(
            "the failed system (version {}) removed from slot {}",
            version_text(version),
            name.slot.as_str()
        );
        self.slot_changed("clear", r, &text, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str, v: u64) -> Known {
        Known {
            name: EntryName::parse(name).unwrap(),
            version: Some(v),
        }
    }

    #[test]
    fn describe_says_state_and_next_boot() {
        type Case<'a> = (Slot, &'a [Known], Option<u64>, &'a [&'a str]);
        let table: &[Case] = &[
            (
                Slot::A,
                &[k("airlock-a.efi", 1), k("airlock-b+3.efi", 2)],
                Some(1),
                &[
                    "slot a: version 1, good, running",
                    "slot b: version 2, pending (3 tries left)",
                    "committed version (anti-rollback floor): 1",
                    "next boot: slot b (version 2), a new system on trial",
                ],
            ),
            (
                Slot::B,
                &[k("airlock-a.efi", 1), k("airlock-b+2-1.efi", 2)],
                Some(1),
                &[
                    "slot b: version 2, on trial (2 tries left after this one, 1 used), running",
                    "next boot: slot b (version 2)",
                ],
            ),
            (
                Slot::A,
                &[k("airlock-a.efi", 1), k("airlock-b+0-3.efi", 2)],
                Some(1),
                &[
                    "slot b: version 2, FAILED after 3 tries",
                    "next boot: slot a (version 1)",
                ],
            ),
            (
                Slot::A,
                &[k("airlock-a+3.efi", 1)],
                None,
                &[
                    "slot b: empty",
                    "committed version (anti-rollback floor): none yet",
                ],
            ),
        ];
        for (running, known, committed, want) in table {
            let text = describe(*running, known, *committed);
            for w in *want {
                assert!(
                    text.lines().any(|l| l.starts_with(w)),
                    "{w:?} not in\n{text}"
                );
            }
        }
    }
}
