//! minisign parsers (signature, public key, unencrypted secret key): no
//! panics; accepted signatures and public keys round-trip through their
//! writers; verifying an accepted signature never panics.
#![no_main]

use airlock_formats::minisig::{self, PublicKey, SecretKey, SignatureFile};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static KEY: OnceLock<Option<PublicKey>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = minisig::parse_signature_bytes(data) {
        assert_eq!(SignatureFile::parse(&sig.to_file()).ok(), Some(sig.clone()));
        if let Some(pk) = KEY.get_or_init(|| SecretKey::generate().ok().map(|k| k.public_key())) {
            // Same key id, so the Ed25519 checks themselves run on fuzzed input.
            let pk = PublicKey {
                key_id: sig.key_id,
                key: pk.key,
            };
            let _ = pk.verify(&sig, data);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pk) = PublicKey::parse(text) {
            assert_eq!(PublicKey::parse(&pk.to_file()).ok(), Some(pk));
        }
        // Encrypted keys would run scrypt (1 GiB); only the unencrypted path.
        if matches!(SecretKey::is_encrypted(text), Ok(false)) {
            let _ = SecretKey::parse(text, || None);
        }
    }
});
