//! The CPU line of `status`. The real gate (refusing a CPU without
//! x86-64-v3 before any of our code runs) is `cpu_gate` in the binary; by
//! the time this runs the gate has passed, so this only reports.

/// The x86-64-v3 features the build requires, as std names them.
pub const REQUIRED: &[&str] = &[
    "avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe",
];

/// Names of required features the running CPU lacks (empty when all present).
pub fn missing() -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! check {
        ($($f:tt),*) => {$(
            if !std::arch::is_x86_feature_detected!($f) { out.push($f); }
        )*};
    }
    check!("avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "lzcnt", "movbe");
    out
}

/// `x86-64-v3 ok` or `x86-64-v3 MISSING avx2,fma`.
pub fn status_line() -> String {
    let m = missing();
    if m.is_empty() {
        "x86-64-v3 ok".to_string()
    } else {
        format!("x86-64-v3 MISSING {}", m.join(","))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_the_baseline() {
        // The test binary itself is compiled for x86-64-v3: if it runs, the
        // CPU has these features, and the report must agree.
        assert_eq!(super::status_line(), "x86-64-v3 ok");
        assert_eq!(super::REQUIRED.len(), 8);
    }
}
