//! The worker sandbox: spawn path, Landlock ruleset and seccomp policies (DESIGN.md,
//! "Sandbox of the worker", layers 3–5), and the probe suite that proves each layer.
//!
//! * [`spawn()`] runs a static program inside new PID/mount/net/IPC/UTS namespaces, in a
//!   tmpfs root holding only `/model` (read-only) and `/scratch`, as an unprivileged id with
//!   no capabilities, `no_new_privs`, rlimits, a parent-death signal, only the handed-over fds,
//!   a clean environment, Landlock and the stage-1 seccomp filter.
//!   It refuses to spawn from the absolute root of a mount namespace ([`rootmount`]), drops
//!   the host's whole mount tree from the sandbox's namespace, and (by default) waits until
//!   the program has installed its own stage 2 ([`Stage2`]) before it returns.
//! * [`seccomp::install_worker_allowlist`] is the worker's own stage-2 allow list (the probe's
//!   allowed side has a profile of its own, [`seccomp::Profile`]).
//! * [`probe_suite::run`] spawns `airlock-probe` through the same path and checks every layer.
//!
//! See docs/sandbox.md for the order of the steps and the decisions behind them.

mod child;
pub mod landlock_policy;
pub mod names;
pub mod probe_suite;
pub mod rootmount;
pub mod seccomp;
pub mod spawn;

pub use child::ChildStep;
pub use landlock_policy::LandlockMode;
pub use spawn::{spawn, ExitStatus, Limits, Sandboxed, SpawnError, Spec, Stage2, WaitError};
