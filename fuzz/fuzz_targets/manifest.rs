//! Manifest parser: any bytes must give Ok or an error, never a panic; an
//! accepted manifest re-serialises to bytes that parse to the same value.
#![no_main]

use airlock_formats::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let bytes = m.to_bytes().unwrap_or_default();
        assert_eq!(Manifest::parse(&bytes).ok(), Some(m));
    }
});
