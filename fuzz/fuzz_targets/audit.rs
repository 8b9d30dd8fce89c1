//! Audit-log parsers (entry lines, segment headers, checkpoint notes,
//! verifier keys, receipts): no panics; accepted input is canonical.
#![no_main]

use airlock_formats::audit::checkpoint::Checkpoint;
use airlock_formats::audit::entry::Entry;
use airlock_formats::audit::layout::SegmentHeader;
use airlock_formats::audit::note::{NoteSigner, NoteVerifier};
use airlock_formats::audit::receipt::Receipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Receipts: accepted text is written back byte for byte.
    if let Ok(r) = Receipt::parse(data) {
        assert_eq!(r.to_text().as_bytes(), data);
    }
    if let Ok(e) = Entry::parse(data) {
        assert_eq!(e.encode().ok().as_deref().map(str::as_bytes), Some(data));
    }
    if let Ok(h) = SegmentHeader::parse(data) {
        assert_eq!(h.encode().as_bytes(), data);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Checkpoint::parse(text) {
        assert_eq!(c.to_text().ok().as_deref(), Some(text));
    }
    let _ = NoteVerifier::parse(text);
    if let Ok(signer) = NoteSigner::from_seed("airlock.local/fuzz/audit", &[7; 32]) {
        let key = signer.verifier();
        let _ = Checkpoint::open(data, &key);
        if let Ok(r) = Receipt::parse(data) {
            let _ = r.verify(&key);
        }
    }
});
