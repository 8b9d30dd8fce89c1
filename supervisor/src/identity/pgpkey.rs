//! The appliance's OpenPGP document key, made with rPGP: v4, Ed25519
//! (legacy EdDSA, which gpg 2.2 reads) sign+certify primary with a
//! Curve25519 ECDH encryption subkey, or RSA-4096 with an RSA-4096
//! encryption subkey. Preferences AES256, AES128; SHA512, SHA256; ZLIB,
//! ZIP, uncompressed. Features: SEIPD v1 only, so GnuPG 2.4 does not write
//! OCB (AEAD) packets to it.

use pgp::composed::{
    Deserializable as _, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
    SubkeyParamsBuilder,
};
use pgp::crypto::{ecc_curve::ECCCurve, hash::HashAlgorithm, sym::SymmetricKeyAlgorithm};
use pgp::ser::Serialize as _;
use pgp::types::{CompressionAlgorithm, KeyDetails as _, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

/// Algorithm of a document key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgo {
    /// Ed25519 (legacy EdDSA) primary + Curve25519 ECDH subkey.
    Ed25519,
    /// RSA-4096 primary + RSA-4096 subkey.
    Rsa4096,
}

impl std::fmt::Display for KeyAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyAlgo::Ed25519 => "ed25519",
            KeyAlgo::Rsa4096 => "rsa4096",
        })
    }
}

impl std::str::FromStr for KeyAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ed25519" => Ok(KeyAlgo::Ed25519),
            "rsa4096" => Ok(KeyAlgo::Rsa4096),
            _ => Err("expected ed25519 or rsa4096".into()),
        }
    }
}

/// What went wrong making or reading a document key.
#[derive(Debug, Error)]
pub enum PgpKeyError {
    #[error("generate OpenPGP key: {0}")]
    Generate(String),
    #[error("serialise OpenPGP key: {0}")]
    Serialise(String),
    #[error("parse OpenPGP secret key: {0}")]
    Parse(String),
}

/// A freshly made document key.
pub struct GeneratedKey {
    pub algo: KeyAlgo,
    /// Creation time (Unix seconds), as in the key packets.
    pub created: u64,
    /// The transferable secret key, binary, unencrypted: only ever stored
    /// sealed.
    pub secret: Zeroizing<Vec<u8>>,
    /// The transferable public key, ASCII-armored.
    pub public_armored: String,
    /// v4 fingerprint, 40 upper-case hex digits.
    pub fingerprint: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("algo", &self.algo)
            .field("fingerprint", &self.fingerprint)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn key_types(algo: KeyAlgo) -> (KeyType, KeyType) {
    match algo {
        KeyAlgo::Ed25519 => (
            KeyType::Ed25519Legacy,
            KeyType::ECDH(ECCCurve::Curve25519Legacy),
        ),
        KeyAlgo::Rsa4096 => (KeyType::Rsa(4096), KeyType::Rsa(4096)),
    }
}

/// Makes a document key with user id `user_id`, created at `created` (Unix
/// seconds).
pub fn generate(algo: KeyAlgo, user_id: &str, created: u64) -> Result<GeneratedKey, PgpKeyError> {
    let gen = |e: &dyn std::fmt::Display| PgpKeyError::Generate(e.to_string());
    let ts = Timestamp::from_secs(u32::try_from(created).map_err(|e| gen(&e))?);
    let (primary, sub) = key_types(algo);
    let subkey = SubkeyParamsBuilder::default()
        .key_type(sub)
        .can_encrypt(EncryptionCaps::All)
        .created_at(ts)
        .build()
        .map_err(|e| gen(&e))?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(primary)
        .can_certify(true)
        .can_sign(true)
        .created_at(ts)
        .primary_user_id(user_id.to_owned())
        .feature_seipd_v1(true)
        .feature_seipd_v2(false)
        .preferred_symmetric_algorithms(
            vec![SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128].into(),
        )
        .preferred_hash_algorithms(vec![HashAlgorithm::Sha512, HashAlgorithm::Sha256].into())
        .preferred_compression_algorithms(
            vec![
                CompressionAlgorithm::ZLIB,
                CompressionAlgorithm::ZIP,
                CompressionAlgorithm::Uncompressed,
            ]
            .into(),
        )
        .subkey(subkey)
        .build()
        .map_err(|e| gen(&e))?;
    let key = params.generate(rand::rngs::OsRng).map_err(|e| gen(&e))?;
    let ser = |e: pgp::errors::Error| PgpKeyError::Serialise(e.to_string());
    let secret = Zeroizing::new(key.to_bytes().map_err(ser)?);
    let public_armored = key
        .to_public_key()
        .to_armored_string(None.into())
        .map_err(ser)?;
    Ok(GeneratedKey {
        algo,
        created,
        secret,
        public_armored,
        fingerprint: fingerprint_hex(&key),
    })
}

/// The v4 fingerprint of a key as 40 upper-case hex digits.
pub fn fingerprint_hex(key: &SignedSecretKey) -> String {
    format!("{:X}", key.fingerprint())
}

/// Parses the binary secret key stored in a grant.
pub fn parse_secret(bytes: &[u8]) -> Result<SignedSecretKey, PgpKeyError> {
    let key = SignedSecretKey::from_bytes(bytes).map_err(|e| PgpKeyError::Parse(e.to_string()))?;
    key.verify_bindings()
        .map_err(|e| PgpKeyError::Parse(e.to_string()))?;
    Ok(key)
}

/// A fingerprint for reading aloud: groups of four, two spaces in the
/// middle, as gpg prints it (`ABCD 1234 ...  ...`).
pub fn grouped(fingerprint: &str) -> String {
    let groups: Vec<&str> = fingerprint
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or("?"))
        .collect();
    let half = groups.len().div_ceil(2);
    format!("{}  {}", groups[..half].join(" "), groups[half..].join(" "))
        .trim_end()
        .to_string()
}
