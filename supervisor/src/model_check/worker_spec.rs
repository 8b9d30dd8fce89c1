//! The sandbox spec of an inference worker: the job path's one way to
//! start a worker on a model. Its model directory is the active version's,
//! and only after this boot's at-rest check passed for it
//! ([`super::record::worker_model_dir`]); the sandbox binds it read-only
//! at `/model` and nothing else of the store is in the worker's root.

use super::record::{worker_model_dir, Refusal};
use airlock_sandbox::Spec;
use std::path::Path;

/// The worker's spec for model `name`: `program` with the sandbox's
/// defaults (worker stage 2, unprivileged uid/gid, limits, scratch) and
/// `model_dir` = the checked active version's directory. Refused, with
/// the reason, when the model has no active version or it did not pass
/// this boot's check. The caller adds arguments and fds.
pub fn worker_spec(
    program: &Path,
    store: &Path,
    record: &Path,
    name: &str,
) -> Result<Spec, Refusal> {
    let dir = worker_model_dir(store, record, name)?;
    let mut spec = Spec::new(program);
    spec.model_dir = Some(dir);
    Ok(spec)
}
