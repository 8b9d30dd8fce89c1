//! The sandboxed inference worker (see `cli` for its command line).

use std::process::ExitCode;

use mimalloc::MiMalloc;

/// mimalloc: a speed lever measured in `docs/worker.md` (the benchmark's
/// `airlock-worker-sysalloc` is the same program on the system allocator).
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    airlock_worker::cli::main()
}
