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

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{Message, SignedPublicKey};
    use pgp::packet::Features;
    use pgp::types::Password;
    use std::process::Command;

    #[test]
    fn grouped_reads_like_gpg() {
        assert_eq!(
            grouped("0123456789ABCDEF0123456789ABCDEF01234567"),
            "0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567"
        );
    }

    fn gpg(home: &std::path::Path, args: &[&str]) -> std::process::Output {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--no-tty", "--trust-model", "always"])
            .args(args)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The key as gpg 2.2 meets it: `gpg --import` accepts the armored public
    /// key, gpg encrypts to its fingerprint, and rPGP decrypts with the
    /// secret key parsed back from the stored bytes. The features subpacket
    /// says SEIPD v1 only.
    fn interop(algo: KeyAlgo) {
        let t0 = std::time::Instant::now();
        let key = generate(algo, "Airlock appliance <0badc0de>", 1_750_000_000).unwrap();
        println!(
            "{algo} key generated in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(key.fingerprint.len(), 40);
        assert!(key
            .fingerprint
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        assert!(key
            .public_armored
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        assert!(format!("{key:?}").contains("secret: \"<redacted>\""));

        // features, preferences and flags as rPGP reads them back
        let (public, _) = SignedPublicKey::from_string(&key.public_armored).unwrap();
        public.verify_bindings().unwrap();
        let sig = &public.details.users[0].signatures[0];
        assert_eq!(
            sig.features(),
            Some(&Features::from(&[0x01][..])),
            "SEIPD v1 only"
        );
        assert!(sig.preferred_aead_algs().is_empty());
        assert_eq!(
            sig.preferred_symmetric_algs(),
            &[SymmetricKeyAlgorithm::AES256, SymmetricKeyAlgorithm::AES128]
        );
        assert_eq!(
            sig.preferred_hash_algs(),
            &[HashAlgorithm::Sha512, HashAlgorithm::Sha256]
        );
        assert_eq!(
            sig.preferred_compression_algs(),
            &[
                CompressionAlgorithm::ZLIB,
                CompressionAlgorithm::ZIP,
                CompressionAlgorithm::Uncompressed
            ]
        );

        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("pub.asc"), &key.public_armored).unwrap();
        let pub_asc = home.path().join("pub.asc");
        gpg(home.path(), &["--import", pub_asc.to_str().unwrap()]);
        let listed = gpg(
            home.path(),
            &["--with-colons", "--fingerprint", &key.fingerprint],
        );
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            listed.contains(&format!("fpr:::::::::{}:", key.fingerprint)),
            "{listed}"
        );
        assert!(listed.contains("Airlock appliance <0badc0de>"), "{listed}");
        // gpg's own reading of the features subpacket (type 30): 01 only
        let packets = gpg(home.path(), &["--list-packets", pub_asc.to_str().unwrap()]);
        let packets = String::from_utf8_lossy(&packets.stdout).into_owned();
        assert!(packets.contains("(features: 01)"), "{packets}");
        assert!(!packets.contains("aead"), "{packets}");

        let plain = home.path().join("plain.txt");
        std::fs::write(&plain, b"a document for the appliance\n").unwrap();
        let msg = home.path().join("msg.gpg");
        gpg(
            home.path(),
            &[
                "-r",
                &key.fingerprint,
                "-o",
                msg.to_str().unwrap(),
                "--encrypt",
                plain.to_str().unwrap(),
            ],
        );

        let secret = parse_secret(&key.secret).unwrap();
        assert_eq!(fingerprint_hex(&secret), key.fingerprint);
        let bytes = std::fs::read(&msg).unwrap();
        let msg = Message::from_bytes(&bytes[..]).unwrap();
        let mut msg = msg.decrypt(&Password::empty(), &secret).unwrap();
        if msg.is_compressed() {
            msg = msg.decompress().unwrap();
        }
        assert_eq!(
            msg.as_data_vec().unwrap(),
            b"a document for the appliance\n"
        );
    }

    #[test]
    fn ed25519_key_imports_into_gpg_and_decrypts_what_gpg_encrypts() {
        interop(KeyAlgo::Ed25519);
    }

    #[test]
    fn rsa4096_key_imports_into_gpg_and_decrypts_what_gpg_encrypts() {
        interop(KeyAlgo::Rsa4096);
    }

    #[test]
    fn parse_secret_refuses_garbage() {
        assert!(parse_secret(b"not a key").is_err());
        assert!(parse_secret(&[]).is_err());
    }
}
