//! The key holder's half of opening a document: PKESK packets in, session
//! key out. It never sees the encrypted body. The decryption subkey is
//! chosen here by key flags (encrypt communications or storage on its
//! newest binding signature), not by whatever the packet names.

use pgp::composed::SignedSecretKey;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{
    Packet, PacketParser, PacketTrait as _, PublicKeyEncryptedSessionKey, SignatureType,
};
use pgp::types::{DecryptionKey, EskType, KeyDetails as _, Password, PkeskVersion};
use thiserror::Error;

use super::guard::no_panic;
use super::packets::one_line;
use super::secret::SessionKey;

/// Most bytes of session-key packets the key holder reads.
pub const MAX_ESK_BYTES: usize = 64 << 10;
/// Most PKESK packets in one message.
pub const MAX_PKESKS: usize = 32;

/// Why no session key came out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnwrapError {
    #[error("refused: the session-key packets are larger than {MAX_ESK_BYTES} bytes")]
    TooLarge,
    #[error("refused: more than {MAX_PKESKS} session-key packets")]
    TooMany,
    #[error("refused: unreadable session-key packet ({0})")]
    Parse(String),
    #[error("refused: not a session-key packet ({0})")]
    NotPkesk(String),
    #[error("not encrypted to this appliance's key (recipients: {0})")]
    NotForUs(String),
    #[error("refused: PKESK version {0} is not supported (v3 only)")]
    Version(String),
    #[error("refused: the appliance's key has no encryption subkey")]
    NoDecryptionKey,
    #[error("refused: the session key does not decrypt with this appliance's key ({0})")]
    Decrypt(String),
    #[error("refused: unsupported symmetric algorithm {0:?}")]
    Cipher(SymmetricKeyAlgorithm),
    #[error("refused: the OpenPGP parser failed on the session-key packets")]
    Panic,
}

/// Ciphers accepted for a document's session key.
fn accepted(alg: SymmetricKeyAlgorithm) -> bool {
    use SymmetricKeyAlgorithm as S;
    matches!(
        alg,
        S::AES128
            | S::AES192
            | S::AES256
            | S::Twofish
            | S::Camellia128
            | S::Camellia192
            | S::Camellia256
    )
}

/// Parses `esk` (binary PKESK packets) and recovers the session key with
/// `key`'s encryption-capable subkeys.
pub fn unwrap(esk: &[u8], key: &SignedSecretKey) -> Result<SessionKey, UnwrapError> {
    if esk.len() > MAX_ESK_BYTES {
        return Err(UnwrapError::TooLarge);
    }
    let pkesks = no_panic(|| parse(esk), || UnwrapError::Panic)?;
    no_panic(|| recover(&pkesks, key), || UnwrapError::Panic)
}

fn parse(esk: &[u8]) -> Result<Vec<PublicKeyEncryptedSessionKey>, UnwrapError> {
    let mut out = Vec::new();
    for packet in PacketParser::new(esk) {
        match packet.map_err(|e| UnwrapError::Parse(one_line(&e.to_string())))? {
            Packet::PublicKeyEncryptedSessionKey(p) => {
                if out.len() == MAX_PKESKS {
                    return Err(UnwrapError::TooMany);
                }
                out.push(p);
            }
            Packet::Marker(_) => {}
            other => {
                return Err(UnwrapError::NotPkesk(format!("{:?}", other.tag())));
            }
        }
    }
    if out.is_empty() {
        return Err(UnwrapError::NotForUs("none".into()));
    }
    Ok(out)
}

/// Key id as gpg prints it: 16 upper-case hex digits.
fn key_id_hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02X}")).collect()
}

/// Whether the newest binding signature among `sigs` allows encryption.
fn flags_encrypt(sigs: &[pgp::packet::Signature]) -> bool {
    sigs.iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created().map(|t| t.as_secs()))
        .is_some_and(|s| {
            let f = s.key_flags();
            f.encrypt_comms() || f.encrypt_storage()
        })
}

fn recover(
    pkesks: &[PublicKeyEncryptedSessionKey],
    key: &SignedSecretKey,
) -> Result<SessionKey, UnwrapError> {
    let subkeys: Vec<_> = key
        .secret_subkeys
        .iter()
        .filter(|s| flags_encrypt(&s.signatures) && s.key.algorithm().can_encrypt())
        .collect();
    if subkeys.is_empty() {
        return Err(UnwrapError::NoDecryptionKey);
    }
    let mut names = Vec::new();
    let mut last_failure = None;
    for p in pkesks {
        let id = match p.version() {
            PkeskVersion::V3 => p
                .id()
                .map_err(|e| UnwrapError::Parse(one_line(&e.to_string())))?,
            PkeskVersion::V6 => return Err(UnwrapError::Version("6".into())),
            PkeskVersion::Other(v) => return Err(UnwrapError::Version(v.to_string())),
        };
        names.push(if id.is_wildcard() {
            "anonymous".to_string()
        } else {
            key_id_hex(id.as_ref())
        });
        for sub in subkeys.iter().filter(|s| p.match_identity(&s.key)) {
            let values = p
                .values()
                .map_err(|e| UnwrapError::Parse(one_line(&e.to_string())))?;
            match sub.key.decrypt(&Password::empty(), values, EskType::V3_4) {
                Ok(Ok(pgp::composed::PlainSessionKey::V3_4 { sym_alg, ref key })) => {
                    if !accepted(sym_alg) {
                        return Err(UnwrapError::Cipher(sym_alg));
                    }
                    return Ok(SessionKey {
                        algo: u8::from(sym_alg),
                        key: zeroize::Zeroizing::new(key.as_ref().to_vec()),
                    });
                }
                // a hidden recipient's packet that is not ours fails here
                // too: that is "not for us", not a broken packet
                _ if id.is_wildcard() => {}
                Ok(Ok(_)) => last_failure = Some("not a v3 session key".to_string()),
                Ok(Err(e)) | Err(e) => last_failure = Some(one_line(&e.to_string())),
            }
        }
    }
    match last_failure {
        Some(why) => Err(UnwrapError::Decrypt(why)),
        None => Err(UnwrapError::NotForUs(names.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::packets::split;
    use pgp::composed::{
        EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SubkeyParamsBuilder,
    };
    use pgp::crypto::ecc_curve::ECCCurve;

    /// An Ed25519 key with one Curve25519 subkey whose binding signature
    /// carries the given encryption flags.
    fn key(caps: EncryptionCaps) -> SignedSecretKey {
        let sub = SubkeyParamsBuilder::default()
            .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
            .can_encrypt(caps)
            .build()
            .unwrap();
        SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("t <t>".into())
            .subkey(sub)
            .build()
            .unwrap()
            .generate(rand::rngs::OsRng)
            .unwrap()
    }

    /// A message whose PKESK names `key`'s first subkey, whatever its flags
    /// (rPGP's `encrypt_to_key` does not check them).
    fn message_to_subkey(key: &SignedSecretKey) -> Vec<u8> {
        let public = key.to_public_key();
        let mut b = MessageBuilder::from_bytes("", b"text".to_vec())
            .seipd_v1(rand::rngs::OsRng, SymmetricKeyAlgorithm::AES256);
        b.encrypt_to_key(rand::rngs::OsRng, &public.public_subkeys[0].key)
            .unwrap();
        b.to_vec(rand::rngs::OsRng).unwrap()
    }

    /// The decryption subkey is chosen by key flags: a subkey whose binding
    /// does not say "encrypt" is never used, even when a PKESK names it.
    #[test]
    fn the_decryption_subkey_is_chosen_by_key_flags() {
        // (flags on the subkey's binding, expected)
        let cases = [
            (EncryptionCaps::All, true),
            (EncryptionCaps::Communication, true),
            (EncryptionCaps::Storage, true),
            (EncryptionCaps::None, false),
        ];
        for (caps, opens) in cases {
            let k = key(caps);
            let esk = split(&message_to_subkey(&k), 1 << 20).unwrap();
            let got = unwrap(&esk, &k);
            if opens {
                let sk = got.unwrap();
                assert_eq!(sk.algo, 9, "{caps:?}");
                assert_eq!(sk.key.len(), 32, "{caps:?}");
            } else {
                assert_eq!(got.unwrap_err(), UnwrapError::NoDecryptionKey, "{caps:?}");
            }
        }
    }

    #[test]
    fn packet_bounds_and_junk_are_refused() {
        let k = key(EncryptionCaps::All);
        let esk = split(&message_to_subkey(&k), 1 << 20).unwrap();
        assert_eq!(
            unwrap(&vec![0u8; MAX_ESK_BYTES + 1], &k).unwrap_err(),
            UnwrapError::TooLarge
        );
        let many: Vec<u8> = esk.repeat(MAX_PKESKS + 1);
        assert!(many.len() <= MAX_ESK_BYTES);
        assert_eq!(unwrap(&many, &k).unwrap_err(), UnwrapError::TooMany);
        assert_eq!(
            unwrap(&[], &k).unwrap_err(),
            UnwrapError::NotForUs("none".into())
        );
        // a PKESK header over junk: its first byte is read as the version
        assert_eq!(
            unwrap(b"\xc1\x05junk!", &k).unwrap_err(),
            UnwrapError::Version("106".into())
        );
        // a literal data packet where a PKESK belongs
        assert!(matches!(
            unwrap(b"\xcb\x07b\x00\x00\x00\x00\x00x", &k).unwrap_err(),
            UnwrapError::NotPkesk(_) | UnwrapError::Parse(_)
        ));
        let msg = "refused: the session-key packets are larger than 65536 bytes";
        assert_eq!(UnwrapError::TooLarge.to_string(), msg);
    }
}
