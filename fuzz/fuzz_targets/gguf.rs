//! GGUF header reader: any bytes must give Ok or an error, never a panic
//! (nor an allocation or a read beyond the reader's limits).
#![no_main]

use airlock_formats::gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gguf::read_header(data);
});
