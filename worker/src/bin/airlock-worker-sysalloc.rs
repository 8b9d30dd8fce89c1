//! Benchmark lever only (never in the image): `airlock-worker` on glibc's
//! allocator instead of mimalloc, so `scripts/bench-worker` can measure the
//! allocator's effect in the same run. Unsandboxed use only: the sandbox's
//! seccomp allowlist was measured with mimalloc.

use std::process::ExitCode;

fn main() -> ExitCode {
    airlock_worker::cli::main()
}
