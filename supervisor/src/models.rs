//! The update officer's model commands at the console: `import` (bundles
//! on the inserted sticks, verified while copied into the store, with a
//! progress line), `models`, `activate`, `rollback`, `remove`. The stick
//! is mounted read-only (`stickread`) and its manifests are parsed here,
//! in the console's process, never in PID 1. Every outcome is audited.

use crate::auditd::Draft;
use crate::console::Console;
use crate::session::wall_now;
use airlock_formats::audit::entry::{sanitise_name, Action, Outcome, Subject, SubjectKind};
use airlock_formats::bundle;
use airlock_formats::custody;
use airlock_formats::escape;
use airlock_formats::import::{self, Commit, Importer, Progress};
use airlock_formats::manifest::Kind;
use airlock_formats::state::{Decision, State};
use airlock_formats::trust::TrustFile;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The trust roots built into the image.
pub const TRUST_FILE: &str = "/etc/airlock/trust.json";
/// The model store on the state partition.
pub const STORE_DIR: &str = "store";

/// One bundle found on a stick, and what importing it would do.
struct Found {
    device: String,
    path: PathBuf,
    line: String,
    /// Why it would be refused; `None` when it can be imported.
    refused: Option<String>,
    kind: Kind,
    name: String,
    version: u64,
    manifest_sha256: String,
    signers: Vec<String>,
}

/// `98.1 MiB`, `2.00 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    airlock_formats::import::human_bytes(bytes)
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    airlock_formats::import::free_bytes(path)
}

/// A progress line on the console: bytes, MB/s, time left; redrawn at
/// most 5 times a second with `\r`.
struct ConsoleProgress<'a> {
    tty: &'a mut std::fs::File,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
}

impl ConsoleProgress<'_> {
    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last
                .is_some_and(|l| now.duration_since(l) < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(now);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 {
            (self.total.saturating_sub(self.done)) as f64 / rate
        } else {
            0.0
        };
        let width = 30usize;
        let filled = if self.total == 0 {
            width
        } else {
            ((self.done as f64 / self.total as f64) * width as f64) as usize
        }
        .min(width);
        let line = format!(
            "\r[{}{}] {} / {}  {:.1} MB/s  {:.0} s left ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            human(self.done),
            human(self.total),
            rate / 1e6,
            left
        );
        let _ = self.tty.write_all(line.as_bytes());
    }
}

impl Progress for ConsoleProgress<'_> {
    fn start(&mut self, total: u64) {
        self.total = total;
        self.started = Instant::now();
        self.draw(true);
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.draw(false);
    }
    fn finish(&mut self) {
        self.draw(true);
        let _ = self.tty.write_all(b"\n");
    }
}

/// What `models` says after `(active: N)` about this boot's at-rest check
/// of the active version (`model_check::record`).
fn at_rest_note(store: &Path, name: &str, active: Option<u64>) -> String {
    use crate::model_check::record::{worker_model_dir, Refusal, RECORD_DIR};
    if active.is_none() {
        return String::new();
    }
    match worker_model_dir(store, Path::new(RECORD_DIR), name) {
        Ok(_) => "  verified at rest".into(),
        Err(Refusal::Refused { reason, .. }) => format!("  REFUSED: {reason}"),
        Err(Refusal::NotChecked { .. }) => "  at-rest check pending".into(),
        Err(e) => format!("  REFUSED: {e}"),
    }
}

/// Updates this boot's at-rest record after an `activate` (`version`) or
/// a `rollback` (`None`), both of which re-hash what they make active.
fn note_activation(
    store: &Path,
    name: &str,
    version: Option<u64>,
    r: &Result<custody::Activated, custody::CustodyError>,
    started: Instant,
) {
    use crate::model_check::record::{after_activation, RECORD_DIR};
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = after_activation(Path::new(RECORD_DIR), store, name, version, r, ms) {
        log::warn!("{e}");
    }
}

impl Console {
    fn store(&self) -> PathBuf {
        self.state_root.join(STORE_DIR)
    }

    fn trust(&self) -> Result<TrustFile, String> {
        let bytes = std::fs::read(TRUST_FILE).map_err(|e| format!("read {TRUST_FILE}: {e}"))?;
        TrustFile::parse(&bytes).map_err(|e| format!("{TRUST_FILE}: {e}"))
    }

    /// The store, created on first use (empty state).
    fn ensure_store(&self) -> Result<PathBuf, String> {
        let store = self.store();
        if !store.join("state.json").is_file() {
            airlock_formats::store::init(&store).map_err(|e| format!("create the store: {e}"))?;
        }
        Ok(store)
    }

    /// Every bundle on every inserted stick, in a stable order (device,
    /// then directory name).
    fn scan_sticks(&mut self, trust: &TrustFile, store: &Path) -> Vec<Found> {
        let mut found = Vec::new();
        let state = State::load(store).ok();
        let free = free_bytes(store).unwrap_or(0);
        let sticks = crate::usb::scan(Path::new("/sys/block"), &[]).unwrap_or_default();
        for s in sticks {
            let dev = crate::stickwrite::device_of(&s.name);
            let mounted = match crate::stickread::mount_ro(&dev) {
                Ok(m) => m,
                Err(e) => {
                    self.out(&format!("{}: {e}\n", escape::text(&dev)));
                    continue;
                }
            };
            let dirs = crate::stickread::bundle_dirs(&mounted.root, &dev).unwrap_or_default();
            for dir in dirs {
                let shown = escape::bytes(
                    dir.file_name()
                        .map(|n| n.as_encoded_bytes())
                        .unwrap_or_default(),
                );
                let f = match bundle::open_verified(&dir, trust) {
                    Err(e) => Found {
                        device: dev.clone(),
                        path: dir.clone(),
                        line: format!("{dev}: {shown}"),
                        refused: Some(escape::text(&e.to_string()).into_owned()),
                        kind: Kind::Model,
                        name: String::new(),
                        version: 0,
                        manifest_sha256: String::new(),
                        signers: Vec::new(),
                    },
                    Ok((b, tally)) => {
                        let m = &b.manifest;
                        let size = m.total_size();
                        let decision = match &state {
                            Some(st) => b.check_state(st).map_err(|e| e.to_string()),
                            None => Ok(Decision::New),
                        };
                        // The same version again is "already installed" only while
                        // its directory is there (a removed version may come back).
                        let installed = state
                            .as_ref()
                            .is_some_and(|st| st.is_installed(m.kind, &m.name, m.version));
                        let refused = match (&decision, m.kind) {
                            (Err(e), _) => Some(e.clone()),
                            (Ok(d), Kind::System) => crate::system::install::refusal(m, d),
                            (Ok(Decision::Same), _) if installed => {
                                Some("already installed".into())
                            }
                            (Ok(_), _) if size > free => Some(format!(
                                "not enough space: needs {}, {} free",
                                human(size),
                                human(free)
                            )),
                            _ => None,
                        };
                        let what = match decision {
                            Ok(Decision::New) => "new".to_string(),
                            Ok(Decision::Upgrade { from }) => format!("replaces version {from}"),
                            Ok(Decision::Same) => "installs the removed version again".to_string(),
                            _ => String::new(),
                        };
                        Found {
                            device: dev.clone(),
                            path: dir.clone(),
                            line: format!(
                                "{dev}: {shown}: {} {} version {} — signed by {} — {} — {what}",
                                m.kind.as_str(),
                                escape::text(&m.name),
                                m.version,
                                tally.signers.join(", "),
                                human(size)
                            ),
                            refused,
                            kind: m.kind,
                            name: m.name.clone(),
                            version: m.version,
                            manifest_sha256: b.manifest_sha256.clone(),
                            signers: tally.signers.clone(),
                        }
                    }
                };
                found.push(f);
            }
            drop(mounted);
        }
        found
    }

    /// `import`: choose a bundle on the sticks, confirm, import with progress.
    pub(crate) fn cmd_import(&mut self) {
        let (me, role) = self.who();
        let trust = match self.trust() {
            Ok(t) => t,
            Err(e) => return self.out(&format!("import: {e}\n")),
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("import refused: {why}\n"));
        }
        let store = match self.ensure_store() {
            Ok(s) => s,
            Err(e) => return self.out(&format!("import: {e}\n")),
        };
        let found = self.scan_sticks(&trust, &store);
        if found.is_empty() {
            return self.out("import: no bundle (NAME.airlock directory) on the inserted sticks\n");
        }
        let mut list = String::new();
        for (i, f) in found.iter().enumerate() {
            match &f.refused {
                None => list.push_str(&format!("{:>2}) {}\n", i + 1, f.line)),
                Some(why) => list.push_str(&format!("{:>2}) {} — REFUSED: {why}\n", i + 1, f.line)),
            }
        }
        self.out(&list);
        let answer = match crate::prompt::ask(
            &mut self.tty,
            "Import which? (number, Enter to cancel): ",
            true,
            8,
            crate::session::PROMPT_TIMEOUT,
        ) {
            Ok(a) => a.to_string(),
            Err(e) => return self.out(&format!("import {e}\n")),
        };
        if answer.is_empty() {
            return self.out("import cancelled\n");
        }
        let Some(f) = answer
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| found.get(i))
        else {
            return self.out("import: no such number; nothing imported\n");
        };
        let subject = |f: &Found| Subject {
            kind: match f.kind {
                Kind::Model => SubjectKind::Model,
                Kind::System => SubjectKind::System,
            },
            name: Some(sanitise_name(
                f.path
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            )),
            hash: f.manifest_sha256.clone(),
        };
        if let Some(why) = &f.refused {
            let action = match f.kind {
                Kind::Model => Action::ModelImport,
                Kind::System => Action::SystemImport,
            };
            let mut d = Draft::by(&me, role, action, Outcome::Refused)
                .reason("bundle-refused")
                .detail(
                    crate::screen::line(&format!("{}: {why}", f.line))
                        .chars()
                        .take(250)
                        .collect::<String>(),
                );
            if f.manifest_sha256.len() == 64 {
                d.subjects.push(subject(f));
            }
            let _ = self.audit(d);
            return self.out(&format!("import refused: {why}; nothing changed\n"));
        }
        let confirm = format!(
            "Import {} {} version {} (manifest SHA-256 {}…)? Type yes: ",
            f.kind.as_str(),
            escape::text(&f.name),
            f.version,
            f.manifest_sha256.get(..16).unwrap_or("")
        );
        match crate::prompt::ask(
            &mut self.tty,
            &confirm,
            true,
            8,
            crate::session::PROMPT_TIMEOUT,
        ) {
            Ok(a) if a.as_str() == "yes" => {}
            Ok(_) => return self.out("import cancelled; nothing changed\n"),
            Err(e) => return self.out(&format!("import {e}; nothing changed\n")),
        }
        // Mounted again for the copy (the listing's mount is gone).
        let mounted = match crate::stickread::mount_ro(&f.device) {
            Ok(m) => m,
            Err(e) => return self.out(&format!("import failed: {e}; nothing changed\n")),
        };
        let src = mounted.root.join(f.path.file_name().unwrap_or_default());
        let by = Importer {
            account: me.clone(),
            at: wall_now(),
        };
        let mut tty = match self.tty.try_clone() {
            Ok(t) => t,
            Err(e) => return self.out(&format!("import: {e}\n")),
        };
        let mut progress = ConsoleProgress {
            tty: &mut tty,
            total: 0,
            done: 0,
            started: Instant::now(),
            last: None,
        };
        if f.kind == Kind::System {
            let mut tty2 = self.tty.try_clone().ok();
            let mut say = |slot: crate::system::slots::Slot| {
                if let Some(t) = tty2.as_mut() {
                    let _ = writeln!(
                        t,
                        "\nverified; writing the new system into slot {}…",
                        slot.as_str()
                    );
                }
            };
            let r = crate::system::install::from_stick(
                &src,
                &store,
                &trust,
                &by,
                &mut progress,
                &mut say,
            );
            drop(mounted);
            return self.system_imported(f, subject(f), r);
        }
        let r = import::import_by(&src, &store, &trust, Commit::Now, &by, &mut progress);
        drop(mounted);
        let detail = format!(
            "{} version {} signed by {}",
            f.name,
            f.version,
            f.signers.join(",")
        );
        match r {
            Ok(rep) => {
                let mut d = Draft::by(&me, role, Action::ModelImport, Outcome::Ok).detail(
                    crate::screen::line(&detail)
                        .chars()
                        .take(250)
                        .collect::<String>(),
                );
                d.subjects.push(subject(f));
                self.audited(
                    d,
                    &format!(
                        "imported {} {} version {} ({}); activate it with 'activate {} {}'",
                        f.kind.as_str(),
                        escape::text(&f.name),
                        f.version,
                        human(rep.bytes),
                        escape::text(&f.name),
                        f.version
                    ),
                );
            }
            Err(e) => {
                let mut d = Draft::by(&me, role, Action::ModelImport, Outcome::Failed)
                    .reason("import-failed")
                    .detail(
                        crate::screen::line(&detail)
                            .chars()
                            .take(250)
                            .collect::<String>(),
                    );
                d.subjects.push(subject(f));
                let _ = self.audit(d);
                self.out(&format!(
                    "import failed: {}; nothing changed\n",
                    escape::text(&e.to_string())
                ));
            }
        }
    }

    /// Audits and reports a system import (`install::from_stick`).
    fn system_imported(
        &mut self,
        f: &Found,
        subject: Subject,
        r: Result<crate::system::install::Installed, String>,
    ) {
        let (me, role) = self.who();
        let signed = format!("signed by {}", f.signers.join(","));
        match r {
            Ok(done) => {
                let trust = match done.trust {
                    crate::system::rotation::Rotation::Same => String::new(),
                    crate::system::rotation::Rotation::Rotated { from, to } => format!(
                        "; it brings trust roots version {to} (rotation from {from}, signed by \
                         both root thresholds)"
                    ),
                };
                let text = format!(
                    "installed system version {} into slot {} ({}, {signed}){trust}; the next boot \
                     tries it ('system reboot-to-new' restarts now)",
                    f.version,
                    done.slot.as_str(),
                    done.entry
                );
                let mut d = Draft::by(&me, role, Action::SystemImport, Outcome::Ok).detail(
                    crate::screen::line(&text)
                        .chars()
                        .take(250)
                        .collect::<String>(),
                );
                d.subjects.push(subject);
                self.audited(d, &text);
            }
            Err(e) => {
                let mut d = Draft::by(&me, role, Action::SystemImport, Outcome::Failed)
                    .reason("import-failed")
                    .detail(
                        crate::screen::line(&format!("version {}: {e}", f.version))
                            .chars()
                            .take(250)
                            .collect::<String>(),
                    );
                d.subjects.push(subject);
                let _ = self.audit(d);
                self.out(&format!(
                    "import failed: {}; the running system and its boot slot are unchanged\n",
                    escape::text(&e)
                ));
            }
        }
    }

    /// `models`: installed models and versions.
    pub(crate) fn cmd_models(&mut self) {
        let store = self.store();
        if !store.join("state.json").is_file() {
            return self.out("no model is installed (the store is empty)\n");
        }
        match custody::models(&store) {
            Ok(ms) if ms.is_empty() => self.out("no model is installed\n"),
            Ok(ms) => {
                let mut t = String::new();
                for m in ms {
                    t.push_str(&format!(
                        "{} (active: {}){}\n",
                        escape::text(&m.name),
                        m.active
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "none".into()),
                        at_rest_note(&store, &m.name, m.active)
                    ));
                    for v in m.versions {
                        t.push_str(&format!(
                            "  {}{:<4} {:>10}  signed by {}  imported {} by {}{}\n",
                            if v.active { "*" } else { " " },
                            v.version,
                            human(v.size),
                            v.signers
                                .iter()
                                .map(|s| s.name.clone())
                                .collect::<Vec<_>>()
                                .join(","),
                            v.imported_at.as_deref().unwrap_or("?"),
                            v.imported_by.as_deref().unwrap_or("?"),
                            // The active one is marked `*`; why it is kept says the same.
                            v.kept
                                .filter(|_| !v.active)
                                .map(|k| format!("  ({k})"))
                                .unwrap_or_default()
                        ));
                    }
                }
                self.out(&crate::screen::lines(&t));
            }
            Err(e) => self.out(&format!("models: {}\n", escape::text(&e.to_string()))),
        }
    }

    /// `activate NAME [VERSION]` (highest installed when VERSION is absent).
    pub(crate) fn cmd_activate(&mut self, name: &str, version: Option<u64>) {
        self.custody_change("activate", name, version, |store, trust, name, v| {
            let v = match v {
                Some(v) => v,
                None => custody::models(store)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|m| m.name == name)
                    .and_then(|m| m.versions.iter().map(|x| x.version).max())
                    .ok_or_else(|| format!("no model {} is installed", escape::text(name)))?,
            };
            let started = Instant::now();
            let r = custody::activate(store, trust, name, v);
            note_activation(store, name, Some(v), &r, started);
            r.map(|a| {
                (
                    a.version,
                    format!("{} version {} is active", escape::text(name), a.version),
                )
            })
            .map_err(|e| e.to_string())
        });
    }

    /// `rollback NAME`.
    pub(crate) fn cmd_rollback(&mut self, name: &str) {
        self.custody_change("rollback", name, None, |store, trust, name, _| {
            let started = Instant::now();
            let r = custody::rollback(store, trust, name);
            note_activation(store, name, None, &r, started);
            r.map(|a| {
                (
                    a.version,
                    format!(
                        "{} rolled back to version {} (was {})",
                        escape::text(name),
                        a.version,
                        a.previous
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                )
            })
            .map_err(|e| e.to_string())
        });
    }

    /// `remove NAME VERSION`.
    pub(crate) fn cmd_remove(&mut self, name: &str, version: u64) {
        self.custody_change("remove", name, Some(version), |store, _trust, name, v| {
            let v = v.unwrap_or(0);
            custody::remove(store, name, v)
                .map(|freed| {
                    (
                        v,
                        format!(
                            "{} version {v} removed ({} freed)",
                            escape::text(name),
                            human(freed)
                        ),
                    )
                })
                .map_err(|e| e.to_string())
        });
    }

    /// Runs one custody change and audits it (`model-activate`,
    /// `model-rollback`, `model-remove`).
    fn custody_change(
        &mut self,
        what: &str,
        name: &str,
        version: Option<u64>,
        f: impl FnOnce(&Path, &TrustFile, &str, Option<u64>) -> Result<(u64, String), String>,
    ) {
        let (me, role) = self.who();
        let trust = match self.trust() {
            Ok(t) => t,
            Err(e) => return self.out(&format!("{what}: {e}\n")),
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("{what} refused: {why}\n"));
        }
        let store = self.store();
        if !store.join("state.json").is_file() {
            return self.out(&format!("{what}: no model is installed\n"));
        }
        let action = match what {
            "remove" => Action::ModelRemove,
            "rollback" => Action::ModelRollback,
            _ => Action::ModelActivate,
        };
        let shown = crate::screen::line(name)
            .chars()
            .take(64)
            .collect::<String>();
        match f(&store, &trust, name, version) {
            Ok((v, msg)) => self.audited(
                Draft::by(&me, role, action, Outcome::Ok).detail(format!("{shown} version {v}")),
                &msg,
            ),
            Err(e) => {
                let _ = self.audit(
                    Draft::by(&me, role, action, Outcome::Refused)
                        .reason(&format!("{what}-refused"))
                        .detail(shown),
                );
                self.out(&format!("{what} refused: {}\n", escape::text(&e)));
            }
        }
    }
}
