//! End-to-end harness: boots the real Airlock image under QEMU (TCG),
//! drives its serial console expect-style and hot-plugs devices over QMP.
//!
//! Layout: [`artifacts`] finds out/ (never builds, never skips),
//! [`qemu`] builds QEMU's arguments and owns the process, [`console`] is
//! the serial expect stream, [`qmp`] the QMP client, [`stick`] makes USB
//! stick images and reads them back, [`disk`] makes writable disk copies,
//! [`bundles`] packs and signs bundles for the import tests, [`gpg`]
//! drives the host's gpg for operator jobs (documents in, answers checked),
//! [`keyboard`] maps text to USB keyboard strokes, [`screenshot`] checks
//! screendumps, [`status`] parses `status`, [`figures`] prints figures.
//! See docs/testing.md.

pub mod artifacts;
pub mod bundles;
pub mod console;
pub mod disk;
pub mod figures;
pub mod gpg;
pub mod keyboard;
pub mod qemu;
pub mod qmp;
pub mod screenshot;
pub mod session;
pub mod status;
pub mod stick;

pub use artifacts::Artifacts;
pub use console::{Pattern, PROMPT};
pub use disk::DiskCopy;
pub use qemu::{timeout, Boot, Vm, VmConfig, CONSOLE_READY};
pub use status::Status;

/// Unwraps a harness result, failing the test with the error's one-line
/// (`Display`) reason rather than its `Debug` dump.
pub trait Must<T> {
    fn must(self) -> T;
}

impl<T, E: std::fmt::Display> Must<T> for Result<T, E> {
    #[track_caller]
    // Panicking is how a test fails; this is only called from tests.
    #[allow(clippy::panic)]
    fn must(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A finished command's stdout then stderr, as text (for assertion messages
/// of the tests that run the repository's scripts).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
