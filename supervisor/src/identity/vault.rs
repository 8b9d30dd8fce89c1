//! The identity API the console uses: provisioning, login, account and key
//! management. `root` is the state partition's mount point
//! (`/var/lib/airlock`): the identity lives in `root/identity/`, the audit
//! verifier key in `root/audit/audit.pub`.
//!
//! Secrets at rest (see docs/security-team.md): each account's X25519
//! private key is wrapped under argon2id(passphrase); the audit seed, the
//! tag secret and the OpenPGP secret keys are sealed to the X25519 public
//! keys of the accounts entitled to them (grants). A login opens the
//! account's key (one argon2id run) and then its grants.

use super::kdf::{self, KdfError};
use super::pgpkey::{self, KeyAlgo, PgpKeyError};
use super::policy::Policy;
use super::seal::{self, SealError};
use super::store::{
    self, Account, AuditKey, DocumentKey, Grant, Identity, Lock, StoreError, PURPOSE_AUDIT,
    PURPOSE_DOCUMENT, PURPOSE_TAG,
};
use super::tally::{self, TallyError, Verdict};
use airlock_formats::audit::entry::{validate_account, Role};
use airlock_formats::audit::note::NoteSigner;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize as _, Zeroizing};

/// Longest passphrase accepted, bytes (UTF-8).
pub const MAX_PASSPHRASE_BYTES: usize = 1024;
/// AAD label of wrapped account keys.
pub const ACCOUNT_AAD_LABEL: &[u8] = b"airlock-account-v1";
/// Roles that must each keep at least one account.
pub const ROLES: [Role; 3] = [Role::Operator, Role::Officer, Role::Auditor];

/// Why a passphrase is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PassphraseError {
    #[error("passphrase too short: {got} characters, at least {min} needed")]
    TooShort { min: u64, got: u64 },
    #[error("passphrase too long: more than {max} bytes")]
    TooLong { max: usize },
    #[error("passphrase character {position} is a control character")]
    NotPrintable { position: usize },
}

/// What went wrong in an identity operation other than a login.
#[derive(Debug, Error)]
pub enum VaultError {
    #[error("not provisioned")]
    NotProvisioned,
    #[error("already provisioned")]
    AlreadyProvisioned,
    #[error("provision: no {0} account (at least one per role)")]
    MissingRole(Role),
    #[error("account name '{0}': 1-32 of a-z 0-9 . _ -")]
    BadName(String),
    #[error("account {0}: role must be operator, officer or auditor")]
    BadRole(String),
    #[error("account {0} exists already")]
    DuplicateName(String),
    #[error("account {0}: {1}")]
    Passphrase(String, PassphraseError),
    #[error("needs the {need} role (logged in as {have})")]
    NeedRole { need: Role, have: Role },
    #[error("session of {0} no longer matches the identity (account removed or changed)")]
    StaleSession(String),
    #[error("no account {0}")]
    UnknownAccount(String),
    #[error("refused: {0} is the last {1} account")]
    LastOfRole(String, Role),
    #[error("refused: an officer cannot remove their own account")]
    RemoveSelf,
    #[error("identity damaged: {0}")]
    Corrupt(String),
    #[error("audit key: {0}")]
    AuditKey(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tally(#[from] TallyError),
    #[error(transparent)]
    Kdf(#[from] KdfError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    PgpKey(#[from] PgpKeyError),
}

/// Why a login failed.
#[derive(Debug, Error)]
pub enum LoginError {
    #[error("not provisioned")]
    NotProvisioned,
    #[error("unknown account")]
    UnknownAccount,
    #[error("account locked until {until} (Unix time) after {failures} failed logins")]
    Locked { until: u64, failures: u64 },
    #[error("wrong passphrase ({failures} failed in a row)")]
    WrongPassphrase {
        failures: u64,
        /// Wait this long before the next prompt.
        delay: Duration,
        /// This failure locked the account.
        locked_now: bool,
    },
    #[error("login: {0}")]
    Io(#[source] VaultError),
}

impl<E: Into<VaultError>> From<E> for LoginError {
    fn from(e: E) -> Self {
        LoginError::Io(e.into())
    }
}

/// An account to create, with its passphrase as typed.
pub struct NewAccount {
    pub name: String,
    pub role: Role,
    pub passphrase: Zeroizing<String>,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("passphrase", &"<redacted>")
            .finish()
    }
}

/// What provisioning made (public facts only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    pub appliance_id: String,
    /// The audit key as a note verifier key string (also in `audit/audit.pub`).
    pub audit_verifier: String,
    pub audit_fingerprint: String,
    pub document_fingerprint: String,
    pub accounts: Vec<(String, Role)>,
}

/// A document secret key held by an operator's session.
pub struct DocumentSecret {
    /// v4 fingerprint, 40 upper-case hex.
    pub fingerprint: String,
    /// The key new documents are encrypted to.
    pub active: bool,
    /// Transferable secret key, binary (parse with [`pgpkey::parse_secret`]).
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DocumentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSecret")
            .field("fingerprint", &self.fingerprint)
            .field("active", &self.active)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A logged-in account with the secrets its role may use. Zeroized on drop;
/// `Debug` shows no secret.
pub struct Session {
    name: String,
    role: Role,
    appliance_id: String,
    account_secret: Zeroizing<[u8; 32]>,
    audit_seed: Zeroizing<[u8; 32]>,
    tag: Option<Zeroizing<[u8; 32]>>,
    document_keys: Vec<DocumentSecret>,
}

impl Session {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn appliance_id(&self) -> &str {
        &self.appliance_id
    }
    /// Ed25519 seed of the audit key (every role).
    pub fn audit_seed(&self) -> &[u8; 32] {
        &self.audit_seed
    }
    /// The audit key as a note signer (name `airlock-ID`).
    pub fn audit_signer(&self) -> Result<NoteSigner, VaultError> {
        NoteSigner::from_seed(&audit_key_name(&self.appliance_id), &self.audit_seed)
            .map_err(|e| VaultError::AuditKey(e.to_string()))
    }
    /// Keyed-hash secret for plaintext tags (operators; `None` until granted).
    pub fn tag(&self) -> Option<&[u8; 32]> {
        self.tag.as_deref()
    }
    /// Document secret keys granted to this operator (empty for other roles).
    pub fn document_keys(&self) -> &[DocumentSecret] {
        &self.document_keys
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tag", &self.tag.as_ref().map(|_| "<redacted>"))
            .field("document_keys", &self.document_keys)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.account_secret.zeroize();
        self.audit_seed.zeroize();
        if let Some(t) = self.tag.as_mut() {
            t.zeroize();
        }
        for k in &mut self.document_keys {
            k.secret.zeroize();
        }
    }
}

/// Public keys for `keys show` / `keys export`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeys {
    pub appliance_id: String,
    pub audit_verifier: String,
    pub audit_fingerprint: String,
    /// Oldest first.
    pub document_keys: Vec<DocumentKey>,
}

/// Is there an identity under `root`?
pub fn is_provisioned(root: &Path) -> Result<bool, VaultError> {
    Ok(store::load(root)?.is_some())
}

/// Checks a passphrase against the policy: at least
/// `passphrase_min_chars` Unicode scalar values, no control characters, at
/// most [`MAX_PASSPHRASE_BYTES`] bytes.
pub fn check_passphrase(policy: &Policy, passphrase: &str) -> Result<(), PassphraseError> {
    if passphrase.len() > MAX_PASSPHRASE_BYTES {
        return Err(PassphraseError::TooLong {
            max: MAX_PASSPHRASE_BYTES,
        });
    }
    if let Some(i) = passphrase.chars().position(char::is_control) {
        return Err(PassphraseError::NotPrintable { position: i + 1 });
    }
    let got = passphrase.chars().count() as u64;
    if got < policy.passphrase_min_chars {
        return Err(PassphraseError::TooShort {
            min: policy.passphrase_min_chars,
            got,
        });
    }
    Ok(())
}

/// AAD of an account's wrapped key: label, name and role, length-prefixed.
pub fn account_aad(name: &str, role: Role) -> Vec<u8> {
    seal::encode_parts(&[
        ACCOUNT_AAD_LABEL,
        name.as_bytes(),
        role.to_string().as_bytes(),
    ])
}

/// Note key name of the audit key.
pub fn audit_key_name(appliance_id: &str) -> String {
    format!("airlock-{appliance_id}")
}

/// Grant purpose of a document key.
pub fn document_purpose(fingerprint: &str) -> String {
    format!("{PURPOSE_DOCUMENT}{fingerprint}")
}

fn random32() -> Zeroizing<[u8; 32]> {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(b.as_mut());
    b
}

fn check_new(policy: &Policy, id: Option<&Identity>, new: &NewAccount) -> Result<(), VaultError> {
    if validate_account(&new.name).is_err() {
        return Err(VaultError::BadName(new.name.clone()));
    }
    if !ROLES.contains(&new.role) {
        return Err(VaultError::BadRole(new.name.clone()));
    }
    if id.is_some_and(|id| id.account(&new.name).is_some()) {
        return Err(VaultError::DuplicateName(new.name.clone()));
    }
    check_passphrase(policy, &new.passphrase)
        .map_err(|e| VaultError::Passphrase(new.name.clone(), e))
}

/// A new account record; its private key is returned for granting.
fn make_account(policy: &Policy, new: &NewAccount) -> Result<Account, VaultError> {
    let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let phc = kdf::new_phc(policy)?;
    let kek = kdf::derive_kek(new.passphrase.as_bytes(), &phc)?;
    let wrapped = seal::wrap(&kek, &account_aad(&new.name, new.role), secret.as_bytes())?;
    Ok(Account {
        name: new.name.clone(),
        role: new.role,
        kdf: phc,
        x25519_public: store::hex(PublicKey::from(&secret).as_bytes()),
        wrapped_private: store::b64(&wrapped),
    })
}

/// Seals `secret` to `account` for `purpose`, replacing an older grant.
fn add_grant(
    id: &mut Identity,
    account: &str,
    purpose: &str,
    secret: &[u8],
) -> Result<(), VaultError> {
    let public = id
        .account(account)
        .ok_or_else(|| VaultError::UnknownAccount(account.into()))?
        .public_key()?;
    let sealed = seal::seal(&public, purpose, account, secret)?;
    id.grants
        .retain(|g| !(g.account == account && g.purpose == purpose));
    id.grants.push(Grant {
        purpose: purpose.into(),
        account: account.into(),
        sealed: store::b64(&sealed),
    });
    Ok(())
}

fn document_user_id(appliance_id: &str) -> String {
    format!("Airlock appliance <{appliance_id}>")
}

/// First-boot provisioning: accounts (at least one per role, unique names,
/// passphrases per policy), audit key, tag secret, OpenPGP key of `algo`,
/// grants. `audit/audit.pub` first, `identity/identity.json` last, so a
/// power cut leaves either no identity or a complete one.
pub fn provision(
    root: &Path,
    policy: &Policy,
    accounts: &[NewAccount],
    algo: KeyAlgo,
    now: u64,
) -> Result<Provisioned, VaultError> {
    for role in ROLES {
        if !accounts.iter().any(|a| a.role == role) {
            return Err(VaultError::MissingRole(role));
        }
    }
    for (i, a) in accounts.iter().enumerate() {
        check_new(policy, None, a)?;
        if accounts[..i].iter().any(|b| b.name == a.name) {
            return Err(VaultError::DuplicateName(a.name.clone()));
        }
    }
    let _lock = Lock::acquire(root)?;
    if store::load(root)?.is_some() {
        return Err(VaultError::AlreadyProvisioned);
    }
    let mut raw_id = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut raw_id);
    let appliance_id = store::hex(&raw_id);

    let audit_seed = random32();
    let signer = NoteSigner::from_seed(&audit_key_name(&appliance_id), &audit_seed)
        .map_err(|e| VaultError::AuditKey(e.to_string()))?;
    let audit_verifier = signer.verifier().to_string();
    let audit_public = ed25519_dalek::SigningKey::from_bytes(&audit_seed).verifying_key();
    let audit_fingerprint = store::hex(&Sha256::digest(audit_public.as_bytes())).to_uppercase();
    let tag = random32();
    let doc = pgpkey::generate(algo, &document_user_id(&appliance_id), now)?;

    let mut id = Identity {
        format: store::FORMAT_VERSION,
        appliance_id: appliance_id.clone(),
        created: now,
        accounts: Vec::new(),
        audit_key: AuditKey {
            verifier: audit_verifier.clone(),
            fingerprint: audit_fingerprint.clone(),
        },
        document_keys: vec![DocumentKey {
            fingerprint: doc.fingerprint.clone(),
            algorithm: algo,
            created: doc.created,
            public_armored: doc.public_armored.clone(),
            active: true,
        }],
        grants: Vec::new(),
    };
    for a in accounts {
        id.accounts.push(make_account(policy, a)?);
        add_grant(&mut id, &a.name, PURPOSE_AUDIT, audit_seed.as_ref())?;
        if a.role == Role::Operator {
            add_grant(&mut id, &a.name, PURPOSE_TAG, tag.as_ref())?;
            add_grant(
                &mut id,
                &a.name,
                &document_purpose(&doc.fingerprint),
                &doc.secret,
            )?;
        }
    }
    store::write_audit_pub(root, &audit_verifier)?;
    tally::save(
        root,
        &tally::load(root).map(|mut t| {
            t.accounts.clear();
            t
        })?,
    )?;
    store::save(root, &id)?;
    Ok(Provisioned {
        appliance_id,
        audit_verifier,
        audit_fingerprint,
        document_fingerprint: doc.fingerprint,
        accounts: accounts.iter().map(|a| (a.name.clone(), a.role)).collect(),
    })
}

/// Runs a derivation with an existing account's parameters and a random
/// salt, so an unknown name costs as long as a wrong passphrase.
fn dummy_derivation(id: &Identity, policy: &Policy, passphrase: &str) {
    let phc = id
        .accounts
        .first()
        .and_then(|a| kdf::parse_phc(&a.kdf).ok())
        .map(|mut p| {
            rand::rngs::OsRng.fill_bytes(&mut p.salt);
            p.to_phc()
        });
    let phc = match phc {
        Some(p) => Ok(p),
        None => kdf::new_phc(policy),
    };
    if let Ok(phc) = phc {
        let _ = kdf::derive_kek(passphrase.as_bytes(), &phc);
    }
}

fn to32(bytes: &[u8], what: &str) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(VaultError::Corrupt(format!("{what} is not 32 bytes")));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Logs `name` in with `passphrase` at `now` (Unix seconds). A locked
/// account is refused without trying the passphrase; a wrong passphrase
/// counts in the tally (growing delay, then a lock); success clears it.
pub fn unlock(
    root: &Path,
    policy: &Policy,
    name: &str,
    passphrase: &str,
    now: u64,
) -> Result<Session, LoginError> {
    let _lock = Lock::acquire(root)?;
    let id = store::load(root)?.ok_or(LoginError::NotProvisioned)?;
    let Some(acct) = id.account(name) else {
        dummy_derivation(&id, policy, passphrase);
        return Err(LoginError::UnknownAccount);
    };
    let mut tally = tally::load(root)?;
    let mut entry = tally.accounts.get(name).cloned().unwrap_or_default();
    let (verdict, changed) = tally::check(&mut entry, policy, now);
    if let Verdict::Locked { until, failures } = verdict {
        if changed {
            tally.accounts.insert(name.into(), entry);
            tally::save(root, &tally)?;
        }
        return Err(LoginError::Locked { until, failures });
    }
    let kek = kdf::derive_kek(passphrase.as_bytes(), &acct.kdf)?;
    let wrapped = store::unb64(&acct.wrapped_private)?;
    let secret = match seal::unwrap(&kek, &account_aad(&acct.name, acct.role), &wrapped) {
        Ok(s) => to32(&s, "account key")?,
        Err(SealError::Auth) => {
            let f = tally::record_failure(&mut entry, policy, now);
            tally.accounts.insert(name.into(), entry);
            tally::save(root, &tally)?;
            return Err(LoginError::WrongPassphrase {
                failures: f.failures,
                delay: f.delay,
                locked_now: f.locked_until.is_some(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if tally.accounts.remove(name).is_some() {
        tally::save(root, &tally)?;
    }
    Ok(open_session(&id, acct, secret)?)
}

/// Opens the grants of a logged-in account.
fn open_session(
    id: &Identity,
    acct: &Account,
    secret: Zeroizing<[u8; 32]>,
) -> Result<Session, VaultError> {
    let sk = StaticSecret::from(*secret);
    if PublicKey::from(&sk).to_bytes() != acct.public_key()? {
        return Err(VaultError::Corrupt(format!(
            "account {}: key pair mismatch",
            acct.name
        )));
    }
    let open = |purpose: &str| -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let Some(g) = id.grant(&acct.name, purpose) else {
            return Ok(None);
        };
        seal::open(&sk, purpose, &acct.name, &store::unb64(&g.sealed)?)
            .map(Some)
            .map_err(|e| VaultError::Corrupt(format!("grant {purpose} to {}: {e}", acct.name)))
    };
    let audit = open(PURPOSE_AUDIT)?
        .ok_or_else(|| VaultError::Corrupt(format!("no audit grant to {}", acct.name)))?;
    let audit_seed = to32(&audit, "audit seed")?;
    let mut tag = None;
    let mut document_keys = Vec::new();
    if acct.role == Role::Operator {
        tag = open(PURPOSE_TAG)?
            .map(|t| to32(&t, "tag secret"))
            .transpose()?;
        for k in &id.document_keys {
            if let Some(secret) = open(&document_purpose(&k.fingerprint))? {
                document_keys.push(DocumentSecret {
                    fingerprint: k.fingerprint.clone(),
                    active: k.active,
                    secret,
                });
            }
        }
    }
    Ok(Session {
        name: acct.name.clone(),
        role: acct.role,
        appliance_id: id.appliance_id.clone(),
        account_secret: secret,
        audit_seed,
        tag,
        document_keys,
    })
}

/// Loads the identity and checks that `session` still matches an account of
/// role `need` (`None`: any role).
fn load_for(root: &Path, session: &Session, need: Option<Role>) -> Result<Identity, VaultError> {
    if let Some(need) = need {
        if session.role != need {
            return Err(VaultError::NeedRole {
                need,
                have: session.role,
            });
        }
    }
    let id = store::load(root)?.ok_or(VaultError::NotProvisioned)?;
    let sk = StaticSecret::from(*session.account_secret);
    match id.account(&session.name) {
        Some(a) if a.role == session.role && a.public_key()? == PublicKey::from(&sk).to_bytes() => {
            Ok(id)
        }
        _ => Err(VaultError::StaleSession(session.name.clone())),
    }
}

/// An officer adds an account. The audit key is granted now; an operator's
/// tag and document keys stay pending until another operator logs in (see
/// [`grant_pending`]). Returns the pending purposes.
pub fn add_account(
    root: &Path,
    policy: &Policy,
    session: &Session,
    new: NewAccount,
) -> Result<Vec<String>, VaultError> {
    let _lock = Lock::acquire(root)?;
    let mut id = load_for(root, session, Some(Role::Officer))?;
    check_new(policy, Some(&id), &new)?;
    id.accounts.push(make_account(policy, &new)?);
    add_grant(
        &mut id,
        &new.name,
        PURPOSE_AUDIT,
        session.audit_seed.as_ref(),
    )?;
    let mut pending = Vec::new();
    if new.role == Role::Operator {
        pending.push(PURPOSE_TAG.to_string());
        pending.extend(
            id.document_keys
                .iter()
                .map(|k| document_purpose(&k.fingerprint)),
        );
    }
    // a removed account of the same name leaves no lock behind
    let mut t = tally::load(root)?;
    if t.accounts.remove(&new.name).is_some() {
        tally::save(root, &t)?;
    }
    store::save(root, &id)?;
    Ok(pending)
}

/// An officer removes an account (never their own, never the last of a
/// role) and its grants.
pub fn remove_account(root: &Path, session: &Session, name: &str) -> Result<(), VaultError> {
    let _lock = Lock::acquire(root)?;
    let mut id = load_for(root, session, Some(Role::Officer))?;
    if name == session.name {
        return Err(VaultError::RemoveSelf);
    }
    let role = id
        .account(name)
        .ok_or_else(|| VaultError::UnknownAccount(name.into()))?
        .role;
    if id.count_role(role) <= 1 {
        return Err(VaultError::LastOfRole(name.into(), role));
    }
    id.accounts.retain(|a| a.name != name);
    id.grants.retain(|g| g.account != name);
    store::save(root, &id)?;
    let mut t = tally::load(root)?;
    if t.accounts.remove(name).is_some() {
        tally::save(root, &t)?;
    }
    Ok(())
}

/// An officer makes a new active document key, sealed to every operator;
/// older keys stay (inactive) for old documents. Returns its fingerprint.
pub fn rotate_document_key(
    root: &Path,
    session: &Session,
    algo: KeyAlgo,
    now: u64,
) -> Result<String, VaultError> {
    let _lock = Lock::acquire(root)?;
    let mut id = load_for(root, session, Some(Role::Officer))?;
    let doc = pgpkey::generate(algo, &document_user_id(&id.appliance_id), now)?;
    for k in &mut id.document_keys {
        k.active = false;
    }
    id.document_keys.push(DocumentKey {
        fingerprint: doc.fingerprint.clone(),
        algorithm: algo,
        created: doc.created,
        public_armored: doc.public_armored.clone(),
        active: true,
    });
    let operators: Vec<String> = id
        .accounts
        .iter()
        .filter(|a| a.role == Role::Operator)
        .map(|a| a.name.clone())
        .collect();
    let purpose = document_purpose(&doc.fingerprint);
    for op in operators {
        add_grant(&mut id, &op, &purpose, &doc.secret)?;
    }
    store::save(root, &id)?;
    Ok(doc.fingerprint)
}

/// An operator's login grants its tag secret and document keys to operators
/// lacking them. Returns `(account, purpose)` for each new grant (to be
/// audited as key-grant).
pub fn grant_pending(root: &Path, session: &Session) -> Result<Vec<(String, String)>, VaultError> {
    let _lock = Lock::acquire(root)?;
    let mut id = load_for(root, session, Some(Role::Operator))?;
    let mut held: Vec<(String, &[u8])> = Vec::new();
    if let Some(t) = session.tag.as_ref() {
        held.push((PURPOSE_TAG.to_string(), t.as_ref()));
    }
    for k in &session.document_keys {
        held.push((document_purpose(&k.fingerprint), k.secret.as_slice()));
    }
    let operators: Vec<String> = id
        .accounts
        .iter()
        .filter(|a| a.role == Role::Operator && a.name != session.name)
        .map(|a| a.name.clone())
        .collect();
    let mut granted = Vec::new();
    for op in operators {
        for (purpose, secret) in &held {
            if id.grant(&op, purpose).is_none() {
                add_grant(&mut id, &op, purpose, secret)?;
                granted.push((op.clone(), purpose.clone()));
            }
        }
    }
    if !granted.is_empty() {
        store::save(root, &id)?;
    }
    Ok(granted)
}

/// Re-wraps the session's account key under a new passphrase (new salt,
/// the policy's current argon2 parameters).
pub fn change_passphrase(
    root: &Path,
    policy: &Policy,
    session: &Session,
    new: &str,
) -> Result<(), VaultError> {
    check_passphrase(policy, new).map_err(|e| VaultError::Passphrase(session.name.clone(), e))?;
    let _lock = Lock::acquire(root)?;
    let mut id = load_for(root, session, None)?;
    let phc = kdf::new_phc(policy)?;
    let kek = kdf::derive_kek(new.as_bytes(), &phc)?;
    let wrapped = seal::wrap(
        &kek,
        &account_aad(&session.name, session.role),
        session.account_secret.as_ref(),
    )?;
    let acct = id
        .accounts
        .iter_mut()
        .find(|a| a.name == session.name)
        .ok_or_else(|| VaultError::StaleSession(session.name.clone()))?;
    acct.kdf = phc;
    acct.wrapped_private = store::b64(&wrapped);
    store::save(root, &id)?;
    Ok(())
}

/// The public keys, without any passphrase.
pub fn public_keys(root: &Path) -> Result<PublicKeys, VaultError> {
    let id = store::load(root)?.ok_or(VaultError::NotProvisioned)?;
    Ok(PublicKeys {
        appliance_id: id.appliance_id,
        audit_verifier: id.audit_key.verifier,
        audit_fingerprint: id.audit_key.fingerprint,
        document_keys: id.document_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_formats::audit::note::NoteVerifier;

    const T0: u64 = 1_750_000_000;

    /// Cheap argon2 so the tests stay fast; the scheme is the same.
    fn policy() -> Policy {
        Policy {
            argon2_m_kib: 8_192,
            argon2_t: 1,
            argon2_p: 1,
            ..Policy::default()
        }
    }

    fn acct(name: &str, role: Role) -> NewAccount {
        NewAccount {
            name: name.into(),
            role,
            passphrase: Zeroizing::new(pass(name)),
        }
    }

    fn pass(name: &str) -> String {
        format!("{name}'s passphrase is long enough")
    }

    fn provisioned() -> (tempfile::TempDir, Provisioned) {
        let dir = tempfile::tempdir().unwrap();
        let accounts = [
            acct("alice", Role::Operator),
            acct("olga", Role::Officer),
            acct("aud", Role::Auditor),
        ];
        let p = provision(dir.path(), &policy(), &accounts, KeyAlgo::Ed25519, T0).unwrap();
        (dir, p)
    }

    fn login(dir: &Path, name: &str) -> Session {
        unlock(dir, &policy(), name, &pass(name), T0).unwrap()
    }

    fn edit(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join("identity/identity.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn check_passphrase_table() {
        let p = Policy::default();
        let cases: &[(String, Result<(), PassphraseError>)] = &[
            ("x".repeat(20), Ok(())),
            (
                "x".repeat(19),
                Err(PassphraseError::TooShort { min: 20, got: 19 }),
            ),
            (
                String::new(),
                Err(PassphraseError::TooShort { min: 20, got: 0 }),
            ),
            // counted in characters, not bytes: 19 two-byte characters are too few
            (
                "é".repeat(19),
                Err(PassphraseError::TooShort { min: 20, got: 19 }),
            ),
            ("é".repeat(20), Ok(())),
            ("Grüße aus Köln, 2024 — ☃".into(), Ok(())),
            ("spaces are fine too, see".into(), Ok(())),
            ("x".repeat(1024), Ok(())),
            (
                "x".repeat(1025),
                Err(PassphraseError::TooLong { max: 1024 }),
            ),
            ("é".repeat(513), Err(PassphraseError::TooLong { max: 1024 })),
            (
                format!("{}\t", "x".repeat(20)),
                Err(PassphraseError::NotPrintable { position: 21 }),
            ),
            (
                format!("ab\u{1b}[A{}", "x".repeat(20)),
                Err(PassphraseError::NotPrintable { position: 3 }),
            ),
            (
                format!("{}\u{7f}", "x".repeat(20)),
                Err(PassphraseError::NotPrintable { position: 21 }),
            ),
            (
                format!("{}\u{0}", "x".repeat(20)),
                Err(PassphraseError::NotPrintable { position: 21 }),
            ),
            (
                format!("{}\n", "x".repeat(20)),
                Err(PassphraseError::NotPrintable { position: 21 }),
            ),
        ];
        for (pw, want) in cases {
            assert_eq!(&check_passphrase(&p, pw), want, "{pw:?}");
        }
    }

    #[test]
    fn provision_writes_the_identity_and_each_role_gets_its_secrets() {
        let (dir, p) = provisioned();
        let root = dir.path();
        assert!(is_provisioned(root).unwrap());
        assert_eq!(p.appliance_id.len(), 8);
        let audit_pub = std::fs::read_to_string(root.join("audit/audit.pub")).unwrap();
        assert_eq!(audit_pub, format!("{}\n", p.audit_verifier));
        let verifier = NoteVerifier::parse(&audit_pub).unwrap();
        assert_eq!(verifier.name(), format!("airlock-{}", p.appliance_id));

        let op = login(root, "alice");
        assert_eq!((op.name(), op.role()), ("alice", Role::Operator));
        assert_eq!(op.audit_signer().unwrap().verifier(), verifier);
        assert!(op.tag().is_some());
        assert_eq!(op.document_keys().len(), 1);
        assert_eq!(op.document_keys()[0].fingerprint, p.document_fingerprint);
        assert!(op.document_keys()[0].active);
        let key = pgpkey::parse_secret(&op.document_keys()[0].secret).unwrap();
        assert_eq!(pgpkey::fingerprint_hex(&key), p.document_fingerprint);
        // Debug shows no secret
        let shown = format!("{op:?}");
        assert!(!shown.contains(&store::hex(op.audit_seed())), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", op.audit_seed())),
            "{shown}"
        );

        for name in ["olga", "aud"] {
            let s = login(root, name);
            assert_eq!(s.audit_seed(), op.audit_seed());
            assert!(s.tag().is_none(), "{name}");
            assert!(s.document_keys().is_empty(), "{name}");
        }
        let keys = public_keys(root).unwrap();
        assert_eq!(keys.audit_verifier, p.audit_verifier);
        assert_eq!(keys.document_keys.len(), 1);
        assert!(keys.document_keys[0]
            .public_armored
            .contains(&"BEGIN PGP PUBLIC KEY BLOCK".to_string()));
        // a second provisioning is refused
        let again = provision(
            root,
            &policy(),
            &[
                acct("x", Role::Operator),
                acct("y", Role::Officer),
                acct("z", Role::Auditor),
            ],
            KeyAlgo::Ed25519,
            T0,
        );
        assert!(
            matches!(again, Err(VaultError::AlreadyProvisioned)),
            "{again:?}"
        );
    }

    #[test]
    fn provision_refusals_table() {
        let ok = || {
            vec![
                acct("alice", Role::Operator),
                acct("olga", Role::Officer),
                acct("aud", Role::Auditor),
            ]
        };
        let with = |extra: NewAccount| {
            let mut v = ok();
            v.push(extra);
            v
        };
        let short = NewAccount {
            name: "bob".into(),
            role: Role::Operator,
            passphrase: Zeroizing::new("too short".into()),
        };
        let cases: Vec<(Vec<NewAccount>, &str)> = vec![
            (
                ok().into_iter()
                    .filter(|a| a.role != Role::Auditor)
                    .collect(),
                "provision: no auditor account (at least one per role)",
            ),
            (
                vec![],
                "provision: no operator account (at least one per role)",
            ),
            (
                with(acct("alice", Role::Auditor)),
                "account alice exists already",
            ),
            (
                with(acct("Bob", Role::Operator)),
                "account name 'Bob': 1-32 of a-z 0-9 . _ -",
            ),
            (
                with(acct("sys", Role::System)),
                "account sys: role must be operator, officer or auditor",
            ),
            (
                with(short),
                "account bob: passphrase too short: 9 characters, at least 20 needed",
            ),
        ];
        for (accounts, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let got = provision(dir.path(), &policy(), &accounts, KeyAlgo::Ed25519, T0)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_string()));
            assert!(!is_provisioned(dir.path()).unwrap());
        }
    }

    #[test]
    fn wrong_passphrases_delay_then_lock_and_the_lock_expires() {
        let (dir, _) = provisioned();
        let root = dir.path();
        let p = policy();
        for n in 1..=5u64 {
            let e =
                unlock(root, &p, "alice", "a wrong passphrase, long enough", T0 + n).unwrap_err();
            let got = match e {
                LoginError::WrongPassphrase {
                    failures,
                    delay,
                    locked_now,
                } => Some((failures, delay, locked_now)),
                _ => None,
            };
            assert_eq!(
                got,
                Some((n, Duration::from_millis(p.failure_delay_ms(n)), n == 5))
            );
        }
        // locked: the right passphrase is not even tried
        let e = unlock(root, &p, "alice", &pass("alice"), T0 + 100).unwrap_err();
        assert!(
            matches!(e, LoginError::Locked { until, failures: 5 } if until == T0 + 5 + 600),
            "{e:?}"
        );
        // other accounts are unaffected
        login(root, "olga");
        // the lock is in tally.json, so it outlives this process
        assert!(std::fs::read_to_string(root.join("identity/tally.json"))
            .unwrap()
            .contains("alice"));
        // after lockout_s the right passphrase works and clears the tally
        let s = unlock(root, &p, "alice", &pass("alice"), T0 + 5 + 600).unwrap();
        assert_eq!(s.name(), "alice");
        assert!(!std::fs::read_to_string(root.join("identity/tally.json"))
            .unwrap()
            .contains("alice"));
        let e = unlock(
            root,
            &p,
            "alice",
            "a wrong passphrase, long enough",
            T0 + 700,
        )
        .unwrap_err();
        assert!(
            matches!(e, LoginError::WrongPassphrase { failures: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn an_unknown_name_is_refused_after_a_derivation_and_leaves_no_tally() {
        let (dir, _) = provisioned();
        let e = unlock(
            dir.path(),
            &policy(),
            "mallory",
            "whatever it is, it is long",
            T0,
        )
        .unwrap_err();
        assert!(matches!(e, LoginError::UnknownAccount), "{e:?}");
        assert!(
            !std::fs::read_to_string(dir.path().join("identity/tally.json"))
                .unwrap()
                .contains("mallory")
        );
        let none = tempfile::tempdir().unwrap();
        assert!(matches!(
            unlock(none.path(), &policy(), "alice", "x", T0),
            Err(LoginError::NotProvisioned)
        ));
    }

    #[test]
    fn an_unknown_name_costs_about_as_much_as_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::default(); // the real cost, so the difference shows
        let accounts = [
            acct("alice", Role::Operator),
            acct("olga", Role::Officer),
            acct("aud", Role::Auditor),
        ];
        provision(dir.path(), &p, &accounts, KeyAlgo::Ed25519, T0).unwrap();
        let t = std::time::Instant::now();
        let _ = unlock(
            dir.path(),
            &p,
            "alice",
            "a wrong passphrase, long enough",
            T0,
        );
        let wrong = t.elapsed();
        let t = std::time::Instant::now();
        let _ = unlock(
            dir.path(),
            &p,
            "mallory",
            "a wrong passphrase, long enough",
            T0,
        );
        let unknown = t.elapsed();
        assert!(
            unknown * 2 > wrong,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
    }

    #[test]
    fn tampered_identity_fields_fail_closed() {
        // swapping wrapped keys between accounts: each fails under its own AAD
        let (dir, _) = provisioned();
        edit(dir.path(), |v| {
            let a = v["accounts"][0]["wrapped_private"].clone();
            v["accounts"][0]["wrapped_private"] = v["accounts"][1]["wrapped_private"].clone();
            v["accounts"][1]["wrapped_private"] = a;
        });
        for name in ["alice", "olga"] {
            let e = unlock(dir.path(), &policy(), name, &pass(name), T0).unwrap_err();
            assert!(
                matches!(e, LoginError::WrongPassphrase { .. }),
                "{name}: {e:?}"
            );
        }
        // same KDF string and wrapped key copied too: still bound to the name
        let (dir, _) = provisioned();
        edit(dir.path(), |v| {
            for f in ["kdf", "wrapped_private", "x25519_public"] {
                v["accounts"][1][f] = v["accounts"][0][f].clone();
            }
        });
        let e = unlock(dir.path(), &policy(), "olga", &pass("alice"), T0).unwrap_err();
        assert!(matches!(e, LoginError::WrongPassphrase { .. }), "{e:?}");
        // a role changed in the file (auditor made operator): AAD mismatch
        let (dir, _) = provisioned();
        edit(dir.path(), |v| v["accounts"][2]["role"] = "operator".into());
        let e = unlock(dir.path(), &policy(), "aud", &pass("aud"), T0).unwrap_err();
        assert!(matches!(e, LoginError::WrongPassphrase { .. }), "{e:?}");
        // a grant re-addressed to another account does not open
        let (dir, _) = provisioned();
        edit(dir.path(), |v| {
            for g in v["grants"].as_array_mut().unwrap() {
                if g["account"] == "alice" && g["purpose"] == "audit" {
                    g["account"] = "aud".into();
                } else if g["account"] == "aud" && g["purpose"] == "audit" {
                    g["account"] = "alice".into();
                }
            }
        });
        let e = unlock(dir.path(), &policy(), "aud", &pass("aud"), T0).unwrap_err();
        assert!(e.to_string().contains("grant audit to aud"), "{e}");
        // an unknown field is refused
        let (dir, _) = provisioned();
        edit(dir.path(), |v| v["accounts"][0]["admin"] = true.into());
        assert!(is_provisioned(dir.path()).is_err());
    }

    #[test]
    fn officer_manages_accounts_and_pending_grants_follow_an_operator_login() {
        let (dir, p) = provisioned();
        let root = dir.path();
        let officer = login(root, "olga");
        let op = login(root, "alice");
        // only an officer
        let e = add_account(root, &policy(), &op, acct("bob", Role::Operator)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "needs the officer role (logged in as operator)"
        );
        let pending = add_account(root, &policy(), &officer, acct("bob", Role::Operator)).unwrap();
        assert_eq!(
            pending,
            vec![
                "tag".to_string(),
                format!("document:{}", p.document_fingerprint)
            ]
        );
        let e = add_account(root, &policy(), &officer, acct("bob", Role::Auditor)).unwrap_err();
        assert_eq!(e.to_string(), "account bob exists already");
        let bob = login(root, "bob");
        assert!(bob.tag().is_none() && bob.document_keys().is_empty());
        assert_eq!(bob.audit_seed(), op.audit_seed());
        drop(bob);
        // alice's next login grants bob what she holds
        let granted = grant_pending(root, &op).unwrap();
        assert_eq!(
            granted,
            vec![
                ("bob".into(), "tag".into()),
                ("bob".into(), format!("document:{}", p.document_fingerprint))
            ]
        );
        assert!(grant_pending(root, &op).unwrap().is_empty());
        assert!(matches!(
            grant_pending(root, &officer),
            Err(VaultError::NeedRole { .. })
        ));
        let bob = login(root, "bob");
        assert_eq!(bob.tag(), op.tag());
        assert_eq!(bob.document_keys()[0].secret, op.document_keys()[0].secret);

        // removal: never yourself, never the last of a role
        assert!(matches!(
            remove_account(root, &officer, "olga"),
            Err(VaultError::RemoveSelf)
        ));
        let e = remove_account(root, &officer, "aud").unwrap_err();
        assert_eq!(e.to_string(), "refused: aud is the last auditor account");
        assert!(matches!(
            remove_account(root, &officer, "nobody"),
            Err(VaultError::UnknownAccount(_))
        ));
        remove_account(root, &officer, "alice").unwrap();
        let e = remove_account(root, &officer, "bob").unwrap_err();
        assert_eq!(e.to_string(), "refused: bob is the last operator account");
        let id = store::load(root).unwrap().unwrap();
        assert!(id.account("alice").is_none());
        assert!(id.grants.iter().all(|g| g.account != "alice"));
        assert!(matches!(
            unlock(root, &policy(), "alice", &pass("alice"), T0),
            Err(LoginError::UnknownAccount)
        ));
        // alice's old session no longer acts
        assert!(matches!(
            grant_pending(root, &op),
            Err(VaultError::StaleSession(_))
        ));
    }

    #[test]
    fn rotation_grants_the_new_key_to_every_operator_and_keeps_the_old() {
        let (dir, p) = provisioned();
        let root = dir.path();
        let officer = login(root, "olga");
        let op = login(root, "alice");
        assert!(matches!(
            rotate_document_key(root, &op, KeyAlgo::Ed25519, T0),
            Err(VaultError::NeedRole { .. })
        ));
        let fpr = rotate_document_key(root, &officer, KeyAlgo::Ed25519, T0 + 60).unwrap();
        assert_ne!(fpr, p.document_fingerprint);
        let keys = public_keys(root).unwrap();
        let listed: Vec<(&str, bool)> = keys
            .document_keys
            .iter()
            .map(|k| (k.fingerprint.as_str(), k.active))
            .collect();
        assert_eq!(
            listed,
            vec![
                (p.document_fingerprint.as_str(), false),
                (fpr.as_str(), true)
            ]
        );
        let op = login(root, "alice");
        let held: Vec<(&str, bool)> = op
            .document_keys()
            .iter()
            .map(|k| (k.fingerprint.as_str(), k.active))
            .collect();
        assert_eq!(held, listed);
        // the officer still holds no document key
        assert!(login(root, "olga").document_keys().is_empty());
    }

    #[test]
    fn change_passphrase_rewraps_the_account_key() {
        let (dir, _) = provisioned();
        let root = dir.path();
        let s = login(root, "aud");
        let e = change_passphrase(root, &policy(), &s, "short").unwrap_err();
        assert!(
            matches!(
                e,
                VaultError::Passphrase(_, PassphraseError::TooShort { .. })
            ),
            "{e:?}"
        );
        change_passphrase(root, &policy(), &s, "a brand new passphrase for aud").unwrap();
        assert!(matches!(
            unlock(root, &policy(), "aud", &pass("aud"), T0),
            Err(LoginError::WrongPassphrase { .. })
        ));
        let s2 = unlock(root, &policy(), "aud", "a brand new passphrase for aud", T0).unwrap();
        assert_eq!(s2.audit_seed(), s.audit_seed());
    }
}
