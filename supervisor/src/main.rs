//! PID 1 of the appliance, installed as `/init`.
//!
//! `cpu_gate` runs from `.preinit_array` before any Rust code: on a CPU
//! without x86-64-v3 it says so and halts instead of crashing.

mod cpu_gate;

fn main() -> std::process::ExitCode {
    airlock_supervisor::entry()
}
