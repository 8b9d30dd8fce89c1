//! The answer going back: signed by the appliance's key (one-pass
//! signature, literal data, signature) and encrypted to every admin
//! recipient's encryption subkey with v3 PKESK (v4 keys) + SEIPD v1 (MDC),
//! never SEIPD v2, so stock gpg 2.2 and 2.4 read it.

use pgp::composed::{ArmorOptions, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::{hash::HashAlgorithm, sym::SymmetricKeyAlgorithm};
use pgp::types::Password;
use thiserror::Error;

use super::recipients::{encryption_subkey, RecipientError};

/// What went wrong sealing an answer.
#[derive(Debug, Error)]
pub enum SealError {
    #[error("seal: no recipients")]
    NoRecipients,
    #[error("seal: {0}")]
    Recipient(#[from] RecipientError),
    #[error("seal: encrypt to {0}: {1}")]
    Encrypt(String, String),
    #[error("seal: write the message: {0}")]
    Write(String),
}

/// Output form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Binary,
    Armored,
}

/// Signs `answer` with `key`'s primary key and encrypts it to each of
/// `recipients` at time `now` (Unix seconds, for expiry checks).
pub fn seal(
    answer: &str,
    key: &SignedSecretKey,
    recipients: &[SignedPublicKey],
    now: u32,
    form: Form,
) -> Result<Vec<u8>, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let subkeys = recipients
        .iter()
        .map(|r| encryption_subkey(r, now))
        .collect::<Result<Vec<_>, _>>()?;
    let rng = rand::rngs::OsRng;
    let mut builder = MessageBuilder::from_bytes("", answer.as_bytes().to_vec())
        .seipd_v1(rng, SymmetricKeyAlgorithm::AES256);
    builder.sign(&key.primary_key, Password::empty(), HashAlgorithm::Sha512);
    for (r, sub) in recipients.iter().zip(subkeys) {
        builder
            .encrypt_to_key(rng, &sub.key)
            .map_err(|e| SealError::Encrypt(super::recipients::fingerprint(r), e.to_string()))?;
    }
    let w = |e: pgp::errors::Error| SealError::Write(e.to_string());
    match form {
        Form::Binary => builder.to_vec(rng).map_err(w),
        Form::Armored => builder
            .to_armored_string(rng, ArmorOptions::default())
            .map(String::into_bytes)
            .map_err(w),
    }
}
