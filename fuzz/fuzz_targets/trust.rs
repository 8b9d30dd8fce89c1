//! Trust file parser: no panics; accepted files round-trip; approval and
//! rotation checks on arbitrary input never panic.
#![no_main]

use airlock_formats::trust::{Role, TrustFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = TrustFile::parse(data) {
        let bytes = t.to_bytes().unwrap_or_default();
        assert_eq!(TrustFile::parse(&bytes).ok(), Some(t.clone()));
        let _ = t.approve(Role::Models, data, &[]);
        let _ = t.accept_rotation(data, &[]);
    }
});
