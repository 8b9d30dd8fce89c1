//! Authenticated encryption of secrets at rest:
//! - `wrap`/`unwrap`: XChaCha20-Poly1305 under a key-encryption key with
//!   associated data (an account's X25519 private key under its KEK);
//!   blob = nonce (24) || ciphertext+tag.
//! - `seal`/`open`: to an X25519 public key (a grant of a secret to an
//!   account): ephemeral X25519, HKDF-SHA256 with salt = eph_pub || acct_pub
//!   and info = "airlock-grant-v1" || purpose || account, XChaCha20-Poly1305
//!   with a random nonce and AAD = purpose || account (each part
//!   length-prefixed); blob = eph_pub (32) || nonce (24) || ciphertext+tag.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// HKDF info prefix of grants.
pub const GRANT_INFO: &[u8] = b"airlock-grant-v1";

/// What went wrong sealing or opening.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    #[error("open sealed data: too short")]
    Short,
    /// Wrong key, wrong associated data or altered bytes.
    #[error("open sealed data: authentication failed")]
    Auth,
    #[error("seal data: encryption failed")]
    Encrypt,
    #[error("seal to key: not a usable X25519 public key")]
    BadPublicKey,
}

/// Unambiguous concatenation: each part as u32 big-endian length || bytes.
pub fn encode_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Encrypts `plaintext` under `key` with `aad`: nonce || ciphertext.
pub fn wrap(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let nonce = random_nonce();
    let ct = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a [`wrap`] blob; fails on a wrong key, wrong `aad` or any
/// altered byte.
pub fn unwrap(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Short);
    }
    let (nonce, ct) = blob.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Auth)
}

fn grant_key(
    shared: &x25519_dalek::SharedSecret,
    eph_pub: &[u8; 32],
    acct_pub: &[u8; 32],
    purpose: &str,
    account: &str,
) -> Result<Zeroizing<[u8; 32]>, SealError> {
    if !shared.was_contributory() {
        return Err(SealError::BadPublicKey);
    }
    let mut salt = eph_pub.to_vec();
    salt.extend_from_slice(acct_pub);
    let mut info = GRANT_INFO.to_vec();
    info.extend_from_slice(&encode_parts(&[purpose.as_bytes(), account.as_bytes()]));
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(&info, key.as_mut())
        .map_err(|_| SealError::Encrypt)?;
    Ok(key)
}

fn grant_aad(purpose: &str, account: &str) -> Vec<u8> {
    encode_parts(&[purpose.as_bytes(), account.as_bytes()])
}

/// Seals `plaintext` for the holder of `recipient`'s private key, bound to
/// `purpose` and `account`.
pub fn seal(
    recipient: &[u8; 32],
    purpose: &str,
    account: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let eph = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(*recipient));
    let key = grant_key(&shared, &eph_pub, recipient, purpose, account)?;
    let mut out = eph_pub.to_vec();
    out.extend_from_slice(&wrap(&key, &grant_aad(purpose, account), plaintext)?);
    Ok(out)
}

/// Opens a [`seal`] blob with the recipient's private key.
pub fn open(
    secret: &StaticSecret,
    purpose: &str,
    account: &str,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let Some((eph_pub, rest)) = blob.split_first_chunk::<32>() else {
        return Err(SealError::Short);
    };
    let acct_pub = PublicKey::from(secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*eph_pub));
    let key =
        grant_key(&shared, eph_pub, &acct_pub, purpose, account).map_err(|_| SealError::Auth)?;
    unwrap(&key, &grant_aad(purpose, account), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_refusals() {
        let key = [7u8; 32];
        let blob = wrap(&key, b"aad", b"secret").unwrap();
        assert_eq!(blob.len(), NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(unwrap(&key, b"aad", &blob).unwrap().as_slice(), b"secret");
        assert_ne!(wrap(&key, b"aad", b"secret").unwrap(), blob, "random nonce");
        assert_eq!(unwrap(&[8u8; 32], b"aad", &blob), Err(SealError::Auth));
        assert_eq!(unwrap(&key, b"aaD", &blob), Err(SealError::Auth));
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert_eq!(unwrap(&key, b"aad", &bad), Err(SealError::Auth), "byte {i}");
        }
        assert_eq!(
            unwrap(&key, b"aad", &blob[..NONCE_LEN + TAG_LEN - 1]),
            Err(SealError::Short)
        );
    }

    #[test]
    fn seal_round_trip_and_binding() {
        let sk = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let pk = PublicKey::from(&sk).to_bytes();
        let blob = seal(&pk, "tag", "alice", b"thirty-two bytes of tag secret!!").unwrap();
        assert_eq!(
            open(&sk, "tag", "alice", &blob).unwrap().as_slice(),
            b"thirty-two bytes of tag secret!!"
        );
        // bound to purpose, account and the recipient's key
        assert_eq!(open(&sk, "audit", "alice", &blob), Err(SealError::Auth));
        assert_eq!(open(&sk, "tag", "bob", &blob), Err(SealError::Auth));
        // "ta"+"galice" must not equal "tag"+"alice"
        assert_eq!(open(&sk, "ta", "galice", &blob), Err(SealError::Auth));
        let other = StaticSecret::random_from_rng(rand::rngs::OsRng);
        assert_eq!(open(&other, "tag", "alice", &blob), Err(SealError::Auth));
        let mut bad = blob.clone();
        bad[0] ^= 1;
        assert_eq!(open(&sk, "tag", "alice", &bad), Err(SealError::Auth));
        assert_eq!(
            open(&sk, "tag", "alice", &blob[..31]),
            Err(SealError::Short)
        );
        // a low-order recipient key is refused
        assert_eq!(
            seal(&[0u8; 32], "tag", "alice", b"x"),
            Err(SealError::BadPublicKey)
        );
    }
}
