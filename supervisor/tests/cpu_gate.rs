//! The CPU gate of the real `airlock-init` binary, run under QEMU's user
//! mode emulator with CPU models that lack x86-64-v3 features: it must
//! name the missing feature in one plain line and exit 1 (PID 1 would
//! halt instead), never die with "Illegal instruction".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_airlock-init");

fn run_with_cpu(cpu: &str) -> Output {
    Command::new("qemu-x86_64")
        .args(["-cpu", cpu, BIN])
        // As the kernel starts PID 1: no LD_* variables. (cargo sets
        // LD_LIBRARY_PATH; glibc's start-up then runs getenv's strncmp,
        // whose AVX2 variant uses BZHI, which QEMU's TCG ties to BMI1:
        // the artificial "max,-bmi1" model would fault inside glibc before
        // the gate runs. No real CPU has AVX2 and BMI2 without BMI1.)
        .env_clear()
        .output()
        .expect("qemu-x86_64 (Debian package qemu-user, installed by scripts/setup-host)")
}

fn refusal(feature: &str) -> String {
    format!(
        "airlock: this PC's CPU lacks {feature}; Airlock needs an x86-64-v3 CPU (Intel Haswell / AMD Excavator or newer). \
         Halted: nothing was started, you can switch the PC off.\n"
    )
}

#[test]
fn cpus_without_x86_64_v3_are_refused_plainly() {
    for (cpu, missing) in [
        ("qemu64", "AVX2"),
        ("Nehalem", "AVX2"),
        ("max,-avx2", "AVX2"),
        ("max,-bmi1", "BMI1"),
        ("max,-bmi2", "BMI2"),
        ("max,-fma", "FMA"),
        ("max,-f16c", "F16C"),
        ("max,-movbe", "MOVBE"),
        ("max,-abm", "LZCNT"),
    ] {
        let out = run_with_cpu(cpu);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "-cpu {cpu}: {stderr}");
        // Only the refusal: qemu may add its own warnings about TCG features.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("airlock"))
            .collect();
        assert_eq!(ours, vec![refusal(missing).trim_end()], "-cpu {cpu}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_x86_64_v3_cpu_passes_the_gate() {
    for cpu in ["max", "Haswell"] {
        let out = run_with_cpu(cpu);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Past the gate, not PID 1 and no mode: the usage line, exit 2.
        assert_eq!(out.status.code(), Some(2), "-cpu {cpu}: {stderr}");
        assert!(
            stderr.contains("airlock-init: this is the appliance's PID 1 (/init)"),
            "{stderr}"
        );
        assert!(!stderr.contains("lacks"));
    }
}
