//! rPGP has had panics on malicious input (CVE-2024-53856). Every call
//! that parses untrusted bytes goes through [`no_panic`], so a panic is a
//! refusal, not a crash of the process holding the key or the document.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic inside it becomes `Err(on_panic())`.
pub fn no_panic<T, E>(
    f: impl FnOnce() -> Result<T, E>,
    on_panic: impl FnOnce() -> E,
) -> Result<T, E> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(on_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::panic)]
    fn a_panic_becomes_the_given_error() {
        let r: Result<(), &str> = no_panic(|| panic!("boom"), || "refused: parser panic");
        assert_eq!(r, Err("refused: parser panic"));
        assert_eq!(no_panic(|| Ok::<_, ()>(7), || ()), Ok(7));
    }
}
