//! UKI `.osrel` reader: any bytes must give Ok or an error, never a panic
//! or a large allocation; the os-release text parser likewise.
#![no_main]

use airlock_formats::uki::{read_osrel, OsRelease};
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = read_osrel(&mut Cursor::new(data)) {
        let _ = (o.system_version(), o.variant_id());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = OsRelease::parse(text).map(|o| o.system_version());
    }
});
