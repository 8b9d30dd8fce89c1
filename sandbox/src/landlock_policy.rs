//! Landlock policy of the worker sandbox (DESIGN.md layer 4), kept as data.
//!
//! The ruleset is *created* in the spawner before `clone` (this allocates), and its rules are
//! *added and enforced* in the child after `pivot_root` (this does not allocate on success), so
//! the child never has to call the allocator of a possibly multi-threaded parent.
//!
//! * handled: every filesystem right of ABI 6, TCP bind and connect, and the scopes
//!   (abstract unix sockets, signals): whatever is not granted below is denied;
//! * `/model`: [`model_access`] (read files, list directories; never execute or write);
//! * `/scratch`: [`scratch_access`] (read-write, no execute, no device/fifo/socket/symlink nodes);
//! * `/dev` (a read-only tmpfs holding only `random` and `urandom`): `ReadFile` (no ReadDir,
//!   no IoctlDev);
//! * the program file itself, through the fd the spawner opened before entering the namespaces:
//!   [`program_access`] (execute + read). `execveat(fd, "", AT_EMPTY_PATH)` re-opens the file
//!   with `__FMODE_EXEC`, which Landlock checks against `Execute` and `ReadFile` on the file's
//!   inode; the rule is bound to that inode, which is reachable only through that fd (it is
//!   outside the new root and the fd is close-on-exec).
//! * TCP: handled with no rule, so bind/connect are denied even if an IP stack existed.

use std::os::fd::BorrowedFd;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

/// How strictly Landlock must be enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LandlockMode {
    /// Every handled right, rule and scope must be supported by the kernel (ABI ≥ 6), or the
    /// spawn fails. The default, and what the appliance and CI use.
    #[default]
    Hard,
    /// Use what the kernel supports and warn loudly about the rest. Only when explicitly asked
    /// (e.g. running on an older distro kernel for development).
    BestEffort,
}

/// The Landlock ABI the policy is written against (Linux 6.12, the appliance kernel).
pub const POLICY_ABI: ABI = ABI::V6;

/// Rights on the model directory.
pub fn model_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Rights on the scratch directory.
pub fn scratch_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::Refer
}

/// Rights on the program file (only for the spawner's own `execveat`).
pub fn program_access() -> BitFlags<AccessFs> {
    AccessFs::Execute | AccessFs::ReadFile
}

/// Errors of this module; each variant names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// Declaring the handled rights or scopes failed (with `Hard`: the kernel lacks one).
    #[error("landlock: declaring handled rights failed (kernel Landlock ABI < 6?): {0}")]
    Handle(landlock::RulesetError),
    /// `landlock_create_ruleset` failed.
    #[error("landlock: creating the ruleset failed: {0}")]
    Create(landlock::RulesetError),
}

/// A created ruleset waiting for its rules, to be finished in the child.
#[derive(Debug)]
pub struct Prepared {
    ruleset: Option<RulesetCreated>,
    mode: LandlockMode,
}

/// Creates the ruleset (in the parent, before clone).
pub fn prepare(mode: LandlockMode) -> Result<Prepared, LandlockError> {
    let level = match mode {
        LandlockMode::Hard => CompatLevel::HardRequirement,
        LandlockMode::BestEffort => {
            log::warn!(
                "!!! LANDLOCK BEST EFFORT: the worker sandbox enforces only what this kernel \
                 supports; filesystem, TCP or scope restrictions may be missing !!!"
            );
            CompatLevel::BestEffort
        }
    };
    let ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(POLICY_ABI))
        .and_then(|r| r.handle_access(AccessNet::from_all(POLICY_ABI)))
        .and_then(|r| r.scope(Scope::from_all(POLICY_ABI)))
        .map_err(LandlockError::Handle)?
        .create()
        .map_err(LandlockError::Create)?;
    Ok(Prepared {
        ruleset: Some(ruleset),
        mode,
    })
}

/// Why the child could not enforce the policy (no allocation: a step and an errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFailure {
    /// Adding the model rule failed.
    ModelRule,
    /// Adding the scratch rule failed.
    ScratchRule,
    /// Adding the program rule failed.
    ProgramRule,
    /// `landlock_restrict_self` failed or was not fully enforced under `Hard`.
    Restrict,
}

impl Prepared {
    /// Adds the rules and enforces them on the calling (child) thread.
    ///
    /// `model`/`scratch`/`program` are `O_PATH` fds opened inside the new root (and the
    /// program fd from before the namespaces).
    pub fn enforce(
        &mut self,
        model: Option<BorrowedFd<'_>>,
        scratch: BorrowedFd<'_>,
        dev: BorrowedFd<'_>,
        program: BorrowedFd<'_>,
    ) -> Result<(), ChildFailure> {
        let mut rs = self.ruleset.take().ok_or(ChildFailure::Restrict)?;
        if let Some(m) = model {
            rs = rs
                .add_rule(PathBeneath::new(m, model_access()))
                .map_err(|_| ChildFailure::ModelRule)?;
        }
        rs = rs
            .add_rule(PathBeneath::new(scratch, scratch_access()))
            .map_err(|_| ChildFailure::ScratchRule)?;
        rs = rs
            .add_rule(PathBeneath::new(dev, AccessFs::ReadFile))
            .map_err(|_| ChildFailure::ScratchRule)?;
        rs = rs
            .add_rule(PathBeneath::new(program, program_access()))
            .map_err(|_| ChildFailure::ProgramRule)?;
        let status = rs.restrict_self().map_err(|_| ChildFailure::Restrict)?;
        if self.mode == LandlockMode::Hard && status.ruleset != RulesetStatus::FullyEnforced {
            return Err(ChildFailure::Restrict);
        }
        Ok(())
    }
}
