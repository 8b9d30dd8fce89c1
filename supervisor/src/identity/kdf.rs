//! Passphrase to key-encryption key: argon2id (RFC 9106), parameters and
//! salt kept as a PHC string without the hash part
//! (`$argon2id$v=19$m=65536,t=3,p=4$<salt>`): nothing stored tests a guess
//! more cheaply than a full derivation; the guess is tested by opening the
//! account's wrapped key (AEAD), as LUKS does.

use super::policy::Policy;
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use thiserror::Error;
use zeroize::Zeroizing;

/// Salt length written by [`new_phc`].
pub const SALT_LEN: usize = 16;
/// Largest memory cost accepted from a stored string (1 GiB), KiB.
pub const MAX_M_KIB: u32 = 1 << 20;
/// Largest time cost accepted from a stored string.
pub const MAX_T: u32 = 16;
/// Largest lane count accepted from a stored string.
pub const MAX_P: u32 = 16;
/// Length of the derived key.
pub const KEK_LEN: usize = 32;

/// What went wrong with a PHC string or a derivation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KdfError {
    #[error("parse KDF string: {0}")]
    Parse(&'static str),
    #[error("parse KDF string: {0} out of range")]
    Range(&'static str),
    #[error("derive key: {0}")]
    Derive(String),
}

/// argon2id parameters and salt of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: Vec<u8>,
}

impl KdfParams {
    /// The PHC string (no hash part).
    pub fn to_phc(&self) -> String {
        format!(
            "$argon2id$v=19$m={},t={},p={}${}",
            self.m_kib,
            self.t,
            self.p,
            STANDARD_NO_PAD.encode(&self.salt)
        )
    }

    fn check(&self) -> Result<(), KdfError> {
        if !(8..=MAX_M_KIB).contains(&self.m_kib) || self.m_kib < 8 * self.p {
            return Err(KdfError::Range("m"));
        }
        if !(1..=MAX_T).contains(&self.t) {
            return Err(KdfError::Range("t"));
        }
        if !(1..=MAX_P).contains(&self.p) {
            return Err(KdfError::Range("p"));
        }
        if !(8..=64).contains(&self.salt.len()) {
            return Err(KdfError::Range("salt length"));
        }
        Ok(())
    }
}

/// A PHC string with the policy's parameters and a new random salt.
pub fn new_phc(policy: &Policy) -> Result<String, KdfError> {
    let mut salt = vec![0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let range = |v: u64, what| u32::try_from(v).map_err(|_| KdfError::Range(what));
    let params = KdfParams {
        m_kib: range(policy.argon2_m_kib, "m")?,
        t: range(policy.argon2_t, "t")?,
        p: range(policy.argon2_p, "p")?,
        salt,
    };
    params.check()?;
    Ok(params.to_phc())
}

/// Parses `$argon2id$v=19$m=M,t=T,p=P$SALT` exactly (no other algorithm,
/// version, parameter order or hash part), with sane bounds.
pub fn parse_phc(phc: &str) -> Result<KdfParams, KdfError> {
    let mut parts = phc.split('$');
    let (Some(""), Some(alg), Some(ver), Some(params), Some(salt), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(KdfError::Parse("not $argon2id$v=19$m=M,t=T,p=P$SALT"));
    };
    if alg != "argon2id" {
        return Err(KdfError::Parse("algorithm is not argon2id"));
    }
    if ver != "v=19" {
        return Err(KdfError::Parse("version is not 19"));
    }
    let mut it = params.split(',');
    let mut field = |name: &'static str| -> Result<u32, KdfError> {
        let v = it
            .next()
            .and_then(|kv| kv.strip_prefix(name))
            .and_then(|kv| kv.strip_prefix('='))
            .ok_or(KdfError::Parse("parameters are not m=M,t=T,p=P"))?;
        if v.is_empty()
            || v.len() > 10
            || !v.bytes().all(|b| b.is_ascii_digit())
            || v.starts_with('0')
        {
            return Err(KdfError::Parse("parameter is not a decimal number"));
        }
        v.parse().map_err(|_| KdfError::Range(name))
    };
    let (m_kib, t, p) = (field("m")?, field("t")?, field("p")?);
    if it.next().is_some() {
        return Err(KdfError::Parse("parameters are not m=M,t=T,p=P"));
    }
    let salt = STANDARD_NO_PAD
        .decode(salt)
        .map_err(|_| KdfError::Parse("salt is not unpadded base64"))?;
    let params = KdfParams { m_kib, t, p, salt };
    params.check()?;
    Ok(params)
}

/// The 32-byte key-encryption key for `passphrase` under `phc`.
pub fn derive_kek(passphrase: &[u8], phc: &str) -> Result<Zeroizing<[u8; KEK_LEN]>, KdfError> {
    let p = parse_phc(phc)?;
    let params = Params::new(p.m_kib, p.t, p.p, Some(KEK_LEN))
        .map_err(|e| KdfError::Derive(e.to_string()))?;
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, &p.salt, kek.as_mut())
        .map_err(|e| KdfError::Derive(e.to_string()))?;
    Ok(kek)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small parameters so debug-build tests stay fast.
    fn cheap() -> Policy {
        Policy {
            argon2_m_kib: 8_192,
            argon2_t: 1,
            argon2_p: 1,
            ..Policy::default()
        }
    }

    #[test]
    fn new_strings_parse_and_derive_deterministically() {
        let phc = new_phc(&cheap()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{phc}");
        let p = parse_phc(&phc).unwrap();
        assert_eq!(p.salt.len(), SALT_LEN);
        assert_eq!(p.to_phc(), phc);
        let a = derive_kek(b"correct horse battery staple", &phc).unwrap();
        let b = derive_kek(b"correct horse battery staple", &phc).unwrap();
        let c = derive_kek(b"correct horse battery stapl3", &phc).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let other = new_phc(&cheap()).unwrap();
        assert_ne!(other, phc, "salts are random");
        assert_ne!(
            derive_kek(b"correct horse battery staple", &other).unwrap(),
            a
        );
    }

    #[test]
    fn rfc9106_argon2id_vector_through_our_path() {
        // argon2 crate's own KAT would need secret/ad; check instead that our
        // wrapper equals a direct call with the same parameters.
        let phc = "$argon2id$v=19$m=8192,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA";
        let mut want = [0u8; 32];
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 2, 2, Some(32)).unwrap(),
        )
        .hash_password_into(b"pw", b"saltsaltsaltsalt", &mut want)
        .unwrap();
        assert_eq!(*derive_kek(b"pw", phc).unwrap(), want);
    }

    #[test]
    fn parse_refuses_table() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let cases: &[(String, KdfError)] = &[
            (
                format!("$argon2i$v=19$m=65536,t=3,p=4${salt}"),
                KdfError::Parse("algorithm is not argon2id"),
            ),
            (
                format!("$argon2d$v=19$m=65536,t=3,p=4${salt}"),
                KdfError::Parse("algorithm is not argon2id"),
            ),
            (
                format!("$argon2id$v=16$m=65536,t=3,p=4${salt}"),
                KdfError::Parse("version is not 19"),
            ),
            (
                format!("$argon2id$m=65536,t=3,p=4${salt}"),
                KdfError::Parse("not $argon2id$v=19$m=M,t=T,p=P$SALT"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=3,p=4${salt}$aGFzaA"),
                KdfError::Parse("not $argon2id$v=19$m=M,t=T,p=P$SALT"),
            ),
            (
                format!("$argon2id$v=19$t=3,m=65536,p=4${salt}"),
                KdfError::Parse("parameters are not m=M,t=T,p=P"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=3${salt}"),
                KdfError::Parse("parameters are not m=M,t=T,p=P"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=3,p=4,k=1${salt}"),
                KdfError::Parse("parameters are not m=M,t=T,p=P"),
            ),
            (
                format!("$argon2id$v=19$m=+65536,t=3,p=4${salt}"),
                KdfError::Parse("parameter is not a decimal number"),
            ),
            (
                format!("$argon2id$v=19$m=065536,t=3,p=4${salt}"),
                KdfError::Parse("parameter is not a decimal number"),
            ),
            (
                format!("$argon2id$v=19$m=99999999999,t=3,p=4${salt}"),
                KdfError::Parse("parameter is not a decimal number"),
            ),
            (
                format!("$argon2id$v=19$m=4294967295,t=3,p=4${salt}"),
                KdfError::Range("m"),
            ),
            (
                format!("$argon2id$v=19$m=2097152,t=3,p=4${salt}"),
                KdfError::Range("m"),
            ),
            (
                format!("$argon2id$v=19$m=16,t=3,p=4${salt}"),
                KdfError::Range("m"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=100,p=4${salt}"),
                KdfError::Range("t"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=3,p=64${salt}"),
                KdfError::Range("p"),
            ),
            (
                "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA".to_string(),
                KdfError::Range("salt length"),
            ),
            (
                "$argon2id$v=19$m=65536,t=3,p=4$!!!!".to_string(),
                KdfError::Parse("salt is not unpadded base64"),
            ),
            (
                format!("$argon2id$v=19$m=65536,t=3,p=4${salt}=="),
                KdfError::Parse("salt is not unpadded base64"),
            ),
        ];
        for (phc, want) in cases {
            assert_eq!(parse_phc(phc).as_ref(), Err(want), "{phc}");
        }
        assert!(parse_phc(&format!("$argon2id$v=19$m=65536,t=3,p=4${salt}")).is_ok());
    }

    /// Cost of one derivation at the policy default and at OWASP's minimum
    /// (run with `--release -- --ignored --nocapture measure`; figures in
    /// docs/security-team.md).
    #[test]
    #[ignore = "measurement, not a check"]
    fn measure_argon2_cost() {
        for (name, m, t, p) in [
            ("RFC 9106 second option", 65_536, 3, 4),
            ("OWASP minimum", 19_456, 2, 1),
        ] {
            let phc = format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHRzYWx0c2FsdA");
            let _ = derive_kek(b"warm up", &phc).unwrap();
            let n = 5;
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                let _ = derive_kek(b"a passphrase of twenty-plus chars", &phc).unwrap();
            }
            println!(
                "{name}: m={m} KiB t={t} p={p}: {:.0} ms",
                t0.elapsed().as_secs_f64() * 1000.0 / n as f64
            );
        }
    }
}
