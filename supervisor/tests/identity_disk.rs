//! Issue 9, "no private key in the clear on the state partition": provision
//! into a real ext4 file system on a loop device (as on the appliance's
//! state partition), add an account, rotate the document key, unmount, and
//! search the raw image for every private secret and every passphrase. As a
//! control, public values written in the same files must be found, so the
//! search can fail. Needs root (mkfs, losetup, mount).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use airlock_formats::audit::entry::Role;
use airlock_supervisor::identity::pgpkey::{self, KeyAlgo};
use airlock_supervisor::identity::policy::Policy;
use airlock_supervisor::identity::{kdf, seal, store, vault};
use pgp::crypto::{ecdh, eddsa_legacy};
use pgp::types::{PlainSecretParams, SecretParams};
use std::process::Command;
use zeroize::Zeroizing;

mod common;

const T0: u64 = 1_750_000_000;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts on drop (also when an assertion fails while mounted).
struct Mounted(String);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn pass(name: &str) -> String {
    format!("{name} types a passphrase of 20+ characters")
}

fn new_account(name: &str, role: Role) -> vault::NewAccount {
    vault::NewAccount {
        name: name.into(),
        role,
        passphrase: Zeroizing::new(pass(name)),
    }
}

/// One secret in the forms it could take in a file: raw, hex, HEX.
fn forms(label: &str, secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        (format!("{label} (raw)"), secret.to_vec()),
        (format!("{label} (hex)"), hex.clone().into_bytes()),
        (format!("{label} (HEX)"), hex.to_uppercase().into_bytes()),
    ]
}

/// The raw secret scalars of an rPGP secret key (primary and subkeys).
fn pgp_scalars(secret: &[u8]) -> Vec<Vec<u8>> {
    let key = pgpkey::parse_secret(secret).unwrap();
    let mut params = vec![key.primary_key.secret_params().clone()];
    params.extend(
        key.secret_subkeys
            .iter()
            .map(|s| s.key.secret_params().clone()),
    );
    let mut out = Vec::new();
    for p in params {
        let SecretParams::Plain(p) = &p else {
            panic!("stored key is passphrase-locked")
        };
        match p {
            PlainSecretParams::EdDSALegacy(eddsa_legacy::SecretKey::Ed25519(k)) => {
                out.push(k.as_bytes().to_vec())
            }
            PlainSecretParams::ECDH(ecdh::SecretKey::Curve25519Legacy(k)) => {
                out.push(k.as_bytes().to_vec());
                out.push(k.to_bytes_rev().to_vec()); // the MPI's byte order
            }
            other => panic!("unexpected key type {other:?}"),
        }
    }
    assert_eq!(out.len(), 3);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_private_key_material_on_the_raw_state_partition() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("state.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    let lo = common::attach(&img);
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run("mount", &[&lo.0, mnt.to_str().unwrap()]);
    let mounted = Mounted(mnt.to_str().unwrap().to_string());
    let root = mnt.join("var-lib-airlock");
    std::fs::create_dir(&root).unwrap();

    // provision with the real policy (argon2id m=64 MiB), add an operator,
    // rotate the document key, grant the new operator its keys
    let policy = Policy::default();
    let accounts = [
        new_account("alice", Role::Operator),
        new_account("olga", Role::Officer),
        new_account("aud", Role::Auditor),
    ];
    let provisioned = vault::provision(&root, &policy, &accounts, KeyAlgo::Ed25519, T0).unwrap();
    let officer = vault::unlock(&root, &policy, "olga", &pass("olga"), T0).unwrap();
    vault::add_account(&root, &policy, &officer, new_account("bob", Role::Operator)).unwrap();
    let rotated = vault::rotate_document_key(&root, &officer, KeyAlgo::Ed25519, T0 + 60).unwrap();
    let alice = vault::unlock(&root, &policy, "alice", &pass("alice"), T0).unwrap();
    // bob got the rotated key from the rotation; alice grants the tag and the old key
    assert_eq!(vault::grant_pending(&root, &alice).unwrap().len(), 2);
    // one failed login, so tally.json exists too
    assert!(vault::unlock(&root, &policy, "aud", "not aud's passphrase at all", T0).is_err());

    // every secret, taken from the sessions and from the identity itself
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    secrets.extend(forms("audit seed", alice.audit_seed()));
    secrets.extend(forms("tag secret", alice.tag().unwrap()));
    assert_eq!(alice.document_keys().len(), 2);
    for k in alice.document_keys() {
        for (i, s) in pgp_scalars(&k.secret).iter().enumerate() {
            secrets.extend(forms(&format!("OpenPGP {} scalar {i}", k.fingerprint), s));
        }
        // and any 32-byte window of the serialised secret key
        secrets.push((
            format!("OpenPGP {} secret key (tail)", k.fingerprint),
            k.secret[k.secret.len() - 32..].to_vec(),
        ));
    }
    let id = store::load(&root).unwrap().unwrap();
    assert_eq!(id.accounts.len(), 4);
    let mut publics: Vec<(String, Vec<u8>)> = Vec::new();
    for a in &id.accounts {
        let kek = kdf::derive_kek(pass(&a.name).as_bytes(), &a.kdf).unwrap();
        let wrapped = store::unb64(&a.wrapped_private).unwrap();
        let private = seal::unwrap(&kek, &vault::account_aad(&a.name, a.role), &wrapped).unwrap();
        assert_eq!(private.len(), 32);
        secrets.extend(forms(
            &format!("X25519 private key of {}", a.name),
            &private,
        ));
        secrets.extend(forms(&format!("KEK of {}", a.name), kek.as_ref()));
        secrets.push((
            format!("passphrase of {}", a.name),
            pass(&a.name).into_bytes(),
        ));
        publics.push((
            format!("X25519 public key of {} (hex)", a.name),
            a.x25519_public.clone().into_bytes(),
        ));
    }
    publics.push((
        "audit verifier key".into(),
        provisioned.audit_verifier.clone().into_bytes(),
    ));
    publics.push((
        "rotated key fingerprint".into(),
        rotated.clone().into_bytes(),
    ));
    publics.push((
        "a sealed grant (base64)".into(),
        id.grants[0].sealed.clone().into_bytes(),
    ));
    drop((officer, alice));

    drop(mounted);
    drop(lo);
    let raw = std::fs::read(&img).unwrap();
    let found: Vec<&String> = secrets
        .iter()
        .filter(|(_, s)| find(&raw, s))
        .map(|(l, _)| l)
        .collect();
    assert!(
        found.is_empty(),
        "secrets found in the raw image: {found:?}"
    );
    let missing: Vec<&String> = publics
        .iter()
        .filter(|(_, p)| !find(&raw, p))
        .map(|(l, _)| l)
        .collect();
    assert!(
        missing.is_empty(),
        "control: public values not found, the search is blind: {missing:?}"
    );
    println!(
        "searched {} MiB for {} secret forms; {} public controls found",
        raw.len() >> 20,
        secrets.len(),
        publics.len()
    );
}
