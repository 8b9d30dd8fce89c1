//! The health check a newly installed system must pass before its boot is
//! blessed and its version committed: every check tries the real thing
//! (reads the kernel's lockdown state, lists the interfaces, runs the
//! sandbox probe suite, loads a model in the sandboxed worker and makes it
//! answer); the audit log's state comes from PID 1, which opened it and
//! verified its tail. Run in the `system-boot` child, never in PID 1.

use crate::infer::Worker;
use airlock_formats::protocol::{GenerateRequest, Message, Role};
use airlock_sandbox::{probe_suite, LandlockMode, Spec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The worker binary in the image.
pub const WORKER: &str = "/bin/airlock-worker";
/// The model built into the image for this check when none is installed
/// (a tiny generated GGUF; it proves the worker runs, not that it is wise).
pub const BUILTIN_MODEL_DIR: &str = "/usr/share/airlock/health";
pub const BUILTIN_MODEL_FILE: &str = "health.gguf";
/// Where the test fault writes its broken model (demo images only).
const FAULT_MODEL_DIR: &str = "/run/airlock/health-fault";
/// How long the model may take to load under the check.
const LOAD_WITHIN: Duration = Duration::from_secs(600);
/// Tokens the model must produce.
const ANSWER_TOKENS: u32 = 4;

/// What the checks need to know.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The model store on the state partition.
    pub store: PathBuf,
    /// This boot's at-rest verdicts (tmpfs).
    pub record: PathBuf,
    /// The audit log as PID 1 found it: `Ok` (open, tail verified) or why not.
    pub audit: Result<(), String>,
    /// RLIMIT_AS of the worker (policy `job_memory_mib`).
    pub worker_memory: u64,
    /// Test-only: make the model check fail for real (a broken model).
    pub fault_model: bool,
}

/// One check's outcome: what was seen, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: &'static str,
    pub result: Result<String, String>,
}

type CheckFn = fn(&Ctx) -> Result<String, String>;

/// The checks, in order. Policy as data: one line per check and why.
pub const CHECKS: &[(&str, CheckFn)] = &[
    // The kernel's lockdown is at "confidentiality" (no reading kernel
    // memory, no unsigned modules): a kernel built or booted without it
    // must not become the committed system.
    ("lockdown", lockdown),
    // No network interface but lo: the air gap of the new kernel config.
    ("network", network),
    // Every sandbox layer still stops what it must (the probe suite of
    // `selftest`, Landlock required).
    ("sandbox", sandbox),
    // The inference worker starts in its sandbox, loads a model and answers.
    ("worker", worker),
    // The audit log opened and its tail verified (PID 1's verdict).
    ("audit", audit),
];

/// Runs every check (all of them, even after a failure, so the console
/// shows the whole picture).
pub fn run(ctx: &Ctx) -> Vec<Outcome> {
    CHECKS
        .iter()
        .map(|(name, f)| Outcome {
            name,
            result: f(ctx),
        })
        .collect()
}

/// The failures as one line (`sandbox: …; worker: …`), or `None` when all
/// passed; no outcome at all is a failure.
pub fn verdict(outcomes: &[Outcome]) -> Option<String> {
    // An empty check must never bless (a known pitfall of boot assessment).
    if outcomes.is_empty() {
        return Some("no health check ran".into());
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.name)))
        .collect();
    if failed.is_empty() {
        None
    } else {
        Some(failed.join("; "))
    }
}

/// `lockdown`: securityfs names the level in brackets.
pub fn lockdown_level(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text.get(start..)?.find(']')? + start;
    text.get(start + 1..end)
}

fn lockdown(_: &Ctx) -> Result<String, String> {
    let path = "/sys/kernel/security/lockdown";
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    match lockdown_level(&text) {
        Some("confidentiality") => Ok("confidentiality".into()),
        Some(other) => Err(format!(
            "the kernel's lockdown is '{other}', not confidentiality"
        )),
        None => Err(format!("{path} names no level")),
    }
}

fn network(_: &Ctx) -> Result<String, String> {
    let ifs = crate::netlock::list_interfaces(Path::new("/sys/class/net"))
        .map_err(|e| format!("list /sys/class/net: {e}"))?;
    if ifs.iter().all(|n| n == "lo") {
        Ok(format!("interfaces: {}", ifs.join(", ")))
    } else {
        Err(format!("interfaces besides lo: {}", ifs.join(", ")))
    }
}

fn sandbox(_: &Ctx) -> Result<String, String> {
    let probe = Path::new(crate::selftest::PROBE);
    let report = std::panic::catch_unwind(|| probe_suite::run(probe, LandlockMode::Hard))
        .map_err(|_| "internal error in the probe suite".to_string())?
        .map_err(|e| format!("could not run: {e}"))?;
    let text = report.to_string();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.starts_with("probe:"))
        .unwrap_or("probe suite ran")
        .to_string();
    if report.all_passed() {
        Ok(summary)
    } else {
        let failed: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("FAIL"))
            .take(3)
            .collect();
        Err(format!("{summary} ({})", failed.join("; ")))
    }
}

/// The model the check runs: the first active one, else the built-in one.
fn model(ctx: &Ctx) -> Result<(Spec, String, String), String> {
    let program = Path::new(WORKER);
    if ctx.fault_model {
        std::fs::create_dir_all(FAULT_MODEL_DIR).map_err(|e| e.to_string())?;
        let f = Path::new(FAULT_MODEL_DIR).join(BUILTIN_MODEL_FILE);
        // A GGUF header and nothing else: the worker must refuse to load it.
        std::fs::write(&f, b"GGUF\x03\0\0\0").map_err(|e| e.to_string())?;
        let mut spec = Spec::new(program);
        spec.model_dir = Some(PathBuf::from(FAULT_MODEL_DIR));
        return Ok((
            spec,
            BUILTIN_MODEL_FILE.into(),
            "a broken model (test fault)".into(),
        ));
    }
    let installed = if ctx.store.join("state.json").is_file() {
        airlock_formats::custody::models(&ctx.store).map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    if let Some(m) = installed.iter().find(|m| m.active.is_some()) {
        let choice = crate::job::setup::model(&ctx.store, &ctx.record, Some(&m.name))
            .map_err(|e| e.to_string())?;
        let spec = crate::model_check::worker_spec::worker_spec(
            program,
            &ctx.store,
            &ctx.record,
            &choice.name,
        )
        .map_err(|e| e.to_string())?;
        return Ok((
            spec,
            choice.gguf,
            format!("{} v{}", choice.name, choice.version),
        ));
    }
    let mut spec = Spec::new(program);
    spec.model_dir = Some(PathBuf::from(BUILTIN_MODEL_DIR));
    Ok((
        spec,
        BUILTIN_MODEL_FILE.into(),
        "the built-in test model".into(),
    ))
}

fn worker(ctx: &Ctx) -> Result<String, String> {
    let (mut spec, gguf, what) = model(ctx)?;
    spec.limits.address_space = Some(ctx.worker_memory);
    let mut w = Worker::start(spec, &gguf, &[], LOAD_WITHIN).map_err(|e| format!("{what}: {e}"))?;
    let req = GenerateRequest {
        messages: vec![Message {
            role: Role::User,
            content: "Say OK.".into(),
        }],
        max_tokens: ANSWER_TOKENS,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: Vec::new(),
    };
    let r = w.generate(&req, &mut |_| {});
    let load_ms = w.load_ms();
    let fin = w.finish();
    let (_, stats) = r.map_err(|e| format!("{what}: {e}"))?;
    fin.map_err(|e| format!("{what}: {e}"))?;
    if stats.decode_tokens == 0 {
        return Err(format!("{what}: the model produced no token"));
    }
    Ok(format!(
        "{what} loaded in {load_ms} ms, answered {} token(s)",
        stats.decode_tokens
    ))
}

fn audit(ctx: &Ctx) -> Result<String, String> {
    ctx.audit
        .clone()
        .map(|()| "open, its tail verified".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_level_is_the_bracketed_word() {
        let table = [
            (
                "none integrity [confidentiality]\n",
                Some("confidentiality"),
            ),
            ("[none] integrity confidentiality\n", Some("none")),
            ("none integrity confidentiality\n", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(lockdown_level(text), want, "{text:?}");
        }
    }

    /// A health check that passes without running its checks is a bug:
    /// the table holds every check the design asks for.
    #[test]
    fn every_check_is_in_the_table() {
        let names: Vec<&str> = CHECKS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["lockdown", "network", "sandbox", "worker", "audit"]);
        assert_eq!(verdict(&[]).as_deref(), Some("no health check ran"));
    }

    #[test]
    fn verdict_names_every_failed_check() {
        let o = |name, r: Result<&str, &str>| Outcome {
            name,
            result: r.map(str::to_string).map_err(str::to_string),
        };
        assert_eq!(
            verdict(&[o("lockdown", Ok("x")), o("network", Ok("y"))]),
            None
        );
        assert_eq!(
            verdict(&[
                o("lockdown", Ok("x")),
                o("worker", Err("no token")),
                o("audit", Err("not open"))
            ])
            .as_deref(),
            Some("worker: no token; audit: not open")
        );
    }

    #[test]
    fn audit_check_reports_pid1s_verdict() {
        let mut ctx = Ctx {
            store: PathBuf::from("/nonexistent"),
            record: PathBuf::from("/nonexistent"),
            audit: Err("the audit log failed: bad tail".into()),
            worker_memory: 1 << 30,
            fault_model: false,
        };
        assert_eq!(audit(&ctx), Err("the audit log failed: bad tail".into()));
        ctx.audit = Ok(());
        assert!(audit(&ctx).is_ok());
    }
}
