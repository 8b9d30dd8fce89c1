//! Accounts, passphrases and the appliance's keys at rest (issue 9; key
//! scheme in docs/security-team.md). One module per job:
//! - `policy`: the security policy values (image file, kernel command line)
//! - `kdf`: passphrase to key-encryption key (argon2id, PHC strings)
//! - `seal`: AEAD wrapping under a KEK and sealing to X25519 keys
//! - `pgpkey`: the OpenPGP document key (rPGP)
//! - `store`: `identity.json` and `audit.pub` on the state partition
//! - `tally`: failed-login counters and locks
//! - `vault`: the API the console uses

pub mod kdf;
pub mod pgpkey;
pub mod policy;
pub mod seal;
pub mod store;
pub mod tally;
pub mod vault;
