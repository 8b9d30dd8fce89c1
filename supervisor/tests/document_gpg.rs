//! The OpenPGP core of operator jobs against the real gpg (Debian's 2.2):
//! gpg encrypts to the appliance's key and `split` → `unwrap` → `open`
//! return the exact text; each bad input is refused with its one-line
//! reason; `seal` writes what gpg decrypts, with a good signature by the
//! appliance's key, as v3 PKESK + SEIPD v1 (MDC). Every gpg runs in a
//! temporary GNUPGHOME.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use airlock_supervisor::document::open::{open, Limits};
use airlock_supervisor::document::packets::split;
use airlock_supervisor::document::recipients::{load_dir, RecipientError};
use airlock_supervisor::document::seal::{seal, Form};
use airlock_supervisor::document::unwrap::unwrap;
use airlock_supervisor::identity::pgpkey::{self, GeneratedKey, KeyAlgo};
use pgp::composed::{Deserializable as _, SignedSecretKey};

/// A gpg home in a temporary directory.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::tempdir().unwrap();
        Gpg { home }
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(self.dir())
            .args(["--batch", "--no-tty", "--yes", "--trust-model", "always"])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args);
        c
    }

    /// Runs gpg with `stdin`; panics unless it succeeds.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let out = self.try_run(args, stdin);
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn try_run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gpg");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    fn import(&self, armored: &str) {
        self.run(&["--import"], armored.as_bytes());
    }

    /// Makes a key `uid` with a `primary` sign+cert key and an `enc`
    /// encryption subkey (None: no subkey); returns its fingerprint.
    fn gen_key(&self, uid: &str, primary: &str, enc: Option<&str>, expire: &str) -> String {
        self.run(&["--quick-gen-key", uid, primary, "sign,cert", expire], b"");
        let fpr = self.fingerprint(uid);
        if let Some(enc) = enc {
            self.run(&["--quick-add-key", &fpr, enc, "encr", expire], b"");
        }
        fpr
    }

    fn fingerprint(&self, uid: &str) -> String {
        let out = self.run(&["--with-colons", "--list-keys", uid], b"");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string()
    }

    /// Key id of the encryption subkey of `uid`, as gpg lists it.
    fn subkey_id(&self, uid: &str) -> String {
        let out = self.run(&["--with-colons", "--list-keys", uid], b"");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find(|l| l.starts_with("sub:"))
            .and_then(|l| l.split(':').nth(4))
            .unwrap()
            .to_string()
    }

    /// Encrypts `plain` to `recipient` with `extra` options.
    fn encrypt(&self, recipient: &str, extra: &[&str], plain: &[u8]) -> Vec<u8> {
        let mut args = vec!["-r", recipient, "-o", "-"];
        args.extend_from_slice(extra);
        args.push("--encrypt");
        self.run(&args, plain).stdout
    }
}

/// An appliance key, made once per algorithm for the whole test binary,
/// with a gpg home holding its public key and a sender key of its own.
struct Appliance {
    key: GeneratedKey,
    secret: SignedSecretKey,
    gpg: Gpg,
}

fn appliance(algo: KeyAlgo) -> &'static Appliance {
    static ED: OnceLock<Appliance> = OnceLock::new();
    static RSA: OnceLock<Appliance> = OnceLock::new();
    let cell = match algo {
        KeyAlgo::Ed25519 => &ED,
        KeyAlgo::Rsa4096 => &RSA,
    };
    cell.get_or_init(|| {
        let key = pgpkey::generate(algo, "Airlock appliance <test>", 1_750_000_000).unwrap();
        let secret = pgpkey::parse_secret(&key.secret).unwrap();
        let gpg = Gpg::new();
        gpg.import(&key.public_armored);
        gpg.gen_key("Sender <sender@example.org>", "ed25519", None, "never");
        Appliance { key, secret, gpg }
    })
}

/// split → unwrap → open, as the job does it, with each step's refusal.
fn job(ciphertext: &[u8], key: &SignedSecretKey, limits: Limits) -> Result<String, String> {
    let esk = split(ciphertext, limits.max_ciphertext).map_err(|e| e.to_string())?;
    let sk = unwrap(&esk, key).map_err(|e| e.to_string())?;
    let text = open(ciphertext, &sk, limits).map_err(|e| e.to_string())?;
    Ok(text.as_str().unwrap().to_string())
}

const TEXT: &str = "Quarterly report, Grüße from the air-gapped appliance.\n\
                    Line two: amounts 1,234.50 EUR; date 2026-12-04.\n";

#[test]
fn gpg_encrypts_and_the_job_opens_the_exact_text() {
    // (options to gpg --encrypt)
    let cases: &[&[&str]] = &[
        &[],
        &["-z", "0"],
        &["--compress-algo", "zip"],
        &["--compress-algo", "zlib", "-z", "9"],
        &["--armor"],
        &["--sign", "-u", "sender@example.org"],
        &["--sign", "-u", "sender@example.org", "-z", "0", "--armor"],
        &["--cipher-algo", "AES128"],
        &["--throw-keyids"],
    ];
    for algo in [KeyAlgo::Ed25519, KeyAlgo::Rsa4096] {
        let a = appliance(algo);
        for extra in cases {
            let ct = a.gpg.encrypt(&a.key.fingerprint, extra, TEXT.as_bytes());
            assert_eq!(
                job(&ct, &a.secret, Limits::default()).as_deref(),
                Ok(TEXT),
                "{algo} {extra:?}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_refused_with_their_reason() {
    let a = appliance(KeyAlgo::Ed25519);
    let fpr = a.key.fingerprint.as_str();
    let other = Gpg::new();
    other.gen_key(
        "Other <other@example.org>",
        "ed25519",
        Some("cv25519"),
        "never",
    );
    let other_sub = other.subkey_id("other@example.org");
    let good = a.gpg.encrypt(fpr, &[], TEXT.as_bytes());
    let mut flipped = good.clone();
    let mid = flipped.len() - 20;
    flipped[mid] ^= 0x01;
    let truncated = good[..good.len() - 10].to_vec();
    let bigger = a
        .gpg
        .encrypt(fpr, &["-z", "0"], TEXT.repeat(100).as_bytes());
    let small = Limits {
        max_ciphertext: 2048,
        ..Limits::default()
    };

    // (name, ciphertext, limits, reason)
    let cases: Vec<(&str, Vec<u8>, Limits, String)> = vec![
        (
            "to another key",
            other.encrypt("other@example.org", &[], TEXT.as_bytes()),
            Limits::default(),
            format!("not encrypted to this appliance's key (recipients: {other_sub})"),
        ),
        (
            "to another key, hidden recipient",
            other.encrypt("other@example.org", &["--throw-keyids"], TEXT.as_bytes()),
            Limits::default(),
            "not encrypted to this appliance's key (recipients: anonymous)".into(),
        ),
        (
            "no MDC (gpg --rfc2440)",
            a.gpg.encrypt(fpr, &["--rfc2440"], TEXT.as_bytes()),
            Limits::default(),
            "refused: no integrity protection (MDC)".into(),
        ),
        (
            "signed only (gpg --sign)",
            a.gpg
                .run(
                    &["-u", "sender@example.org", "-o", "-", "--sign"],
                    TEXT.as_bytes(),
                )
                .stdout,
            Limits::default(),
            "refused: signed but not encrypted (a signed-only message)".into(),
        ),
        (
            "signed only, uncompressed",
            a.gpg
                .run(
                    &["-u", "sender@example.org", "-z", "0", "-o", "-", "--sign"],
                    TEXT.as_bytes(),
                )
                .stdout,
            Limits::default(),
            "refused: signed but not encrypted (a signed-only message)".into(),
        ),
        (
            "not encrypted (gpg --store)",
            a.gpg.run(&["-o", "-", "--store"], TEXT.as_bytes()).stdout,
            Limits::default(),
            "refused: not encrypted (a plain OpenPGP message)".into(),
        ),
        (
            "weak cipher (CAST5)",
            a.gpg
                .encrypt(fpr, &["--cipher-algo", "CAST5"], TEXT.as_bytes()),
            Limits::default(),
            "refused: unsupported symmetric algorithm CAST5".into(),
        ),
        (
            "password only (gpg -c)",
            a.gpg
                .run(&["--passphrase", "pw", "-o", "-", "-c"], TEXT.as_bytes())
                .stdout,
            Limits::default(),
            "refused: the message is not encrypted to any public key (password-only)".into(),
        ),
        (
            "bit flipped",
            flipped,
            Limits::default(),
            "refused: integrity check failed: the ciphertext was modified or truncated".into(),
        ),
        (
            "truncated",
            truncated,
            Limits::default(),
            "refused: integrity check failed: the ciphertext was modified or truncated".into(),
        ),
        (
            "binary plaintext",
            a.gpg.encrypt(fpr, &[], b"text, then \xff\xfe binary"),
            Limits::default(),
            "refused: the document is not UTF-8 text (binary data at byte 11)".into(),
        ),
        (
            "NUL in plaintext",
            a.gpg.encrypt(fpr, &["-z", "0"], b"abc\0def"),
            Limits::default(),
            "refused: the document is not UTF-8 text (binary data at byte 3)".into(),
        ),
        (
            "oversized input",
            bigger,
            small,
            "refused: the file is larger than 2048 bytes".into(),
        ),
        (
            "bzip2 (not built in)",
            a.gpg
                .encrypt(fpr, &["--compress-algo", "bzip2"], TEXT.as_bytes()),
            Limits::default(),
            "refused: unsupported compression".into(),
        ),
        (
            "garbage",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            Limits::default(),
            "refused: not an OpenPGP message".into(),
        ),
        (
            "empty file",
            Vec::new(),
            Limits::default(),
            "refused: not an OpenPGP message".into(),
        ),
    ];
    for (name, ct, limits, reason) in cases {
        let got = job(&ct, &a.secret, limits).expect_err(name);
        assert!(
            got.starts_with(&reason),
            "{name}: got {got:?}, want {reason:?}"
        );
        assert!(!got.contains('\n'), "{name}: one line: {got:?}");
    }
}

#[test]
fn a_compression_bomb_is_refused_at_the_bound() {
    let a = appliance(KeyAlgo::Ed25519);
    let g = &a.gpg;
    // 1 GiB of zeros, compressed by gpg to about 1.3 MB
    let mut child = g
        .cmd(&["-r", &a.key.fingerprint, "-z", "9", "-o", "-", "--encrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            input.write_all(&zeros).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() < 4 << 20, "{}", out.stdout.len());
    let t = std::time::Instant::now();
    let got = job(&out.stdout, &a.secret, Limits::default()).unwrap_err();
    println!("bomb refused in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(
        got,
        format!("refused: decompressed size exceeds {} bytes", 64 << 20)
    );
}

#[test]
fn gnupg_2_4_ocb_messages_open() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gnupg-ocb");
    let bob = std::fs::read(dir.join("bob.sec.asc")).unwrap();
    let (bob, _) = SignedSecretKey::from_armor_single(&bob[..]).unwrap();
    let short = std::fs::read(dir.join("msg_to_bob.asc")).unwrap();
    // the packet after the PKESK is type 20 (OCB), as gpg 2.2 lists it
    let g = Gpg::new();
    let listed = g.try_run(&["--list-packets"], &short);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("tag=20"), "{listed}");
    assert_eq!(job(&short, &bob, Limits::default()).as_deref(), Ok("foo\n"));
    // 300 random bytes: decrypts, then refused as binary
    let multi = std::fs::read(dir.join("msg_to_bob_multi_chunk.asc")).unwrap();
    let got = job(&multi, &bob, Limits::default()).unwrap_err();
    assert!(
        got.starts_with("refused: the document is not UTF-8 text"),
        "{got}"
    );
    // a flipped byte in the OCB body is an integrity failure
    let bin = dearmor(&short);
    let mut bad = bin.clone();
    let n = bad.len() - 5;
    bad[n] ^= 0x80;
    let got = job(&bad, &bob, Limits::default()).unwrap_err();
    assert!(got.starts_with("refused: integrity check failed"), "{got}");
}

fn dearmor(armored: &[u8]) -> Vec<u8> {
    let g = Gpg::new();
    g.run(&["--dearmor"], armored).stdout
}

/// Imports `public` into a fresh gpg home of an admin, makes the admin's
/// keys, and returns (home, fingerprints).
fn admin(kinds: &[(&str, &str, &str)]) -> (Gpg, Vec<String>) {
    let g = Gpg::new();
    let fprs = kinds
        .iter()
        .map(|(uid, p, e)| g.gen_key(uid, p, Some(e), "never"))
        .collect();
    (g, fprs)
}

#[test]
fn sealed_answers_decrypt_in_gpg_with_a_good_signature() {
    // (recipients: uid, primary, encryption subkey)
    let cases: &[&[(&str, &str, &str)]] = &[
        &[("Admin RSA <rsa@example.org>", "rsa4096", "rsa4096")],
        &[("Admin 25519 <cv@example.org>", "ed25519", "cv25519")],
        &[
            ("Admin RSA <rsa@example.org>", "rsa4096", "rsa4096"),
            ("Admin 25519 <cv@example.org>", "ed25519", "cv25519"),
        ],
    ];
    let answer = "Summary: the report names three suppliers.\nTotal: 1,234.50 EUR.\n";
    for algo in [KeyAlgo::Ed25519, KeyAlgo::Rsa4096] {
        let a = appliance(algo);
        for (i, recipients) in cases.iter().enumerate() {
            let (g, fprs) = admin(recipients);
            g.import(&a.key.public_armored);
            let dir = tempfile::tempdir().unwrap();
            for (j, fpr) in fprs.iter().enumerate() {
                // one armored and one binary file when there are two
                let args: &[&str] = if j == 0 { &["--armor"] } else { &[] };
                let mut all = vec!["-o", "-"];
                all.extend_from_slice(args);
                all.extend(["--export", fpr.as_str()]);
                let out = g.run(&all, b"");
                std::fs::write(dir.path().join(format!("{j}.key")), out.stdout).unwrap();
            }
            let keys = load_dir(dir.path(), now()).unwrap();
            assert_eq!(keys.len(), fprs.len());
            let form = if i == 0 { Form::Armored } else { Form::Binary };
            let sealed = seal(answer, &a.secret, &keys, now(), form).unwrap();

            let out = g.run(&["--status-fd", "2", "-o", "-", "--decrypt"], &sealed);
            assert_eq!(String::from_utf8(out.stdout).unwrap(), answer, "{algo} {i}");
            let status = String::from_utf8_lossy(&out.stderr).into_owned();
            let keyid = &a.key.fingerprint[24..];
            assert!(
                status.contains(&format!("[GNUPG:] GOODSIG {keyid} ")),
                "{algo} {i}: {status}"
            );
            assert!(
                status.contains(&format!("[GNUPG:] VALIDSIG {} ", a.key.fingerprint)),
                "{algo} {i}: {status}"
            );
            assert!(status.contains("[GNUPG:] DECRYPTION_OKAY"), "{status}");
            assert!(status.contains("[GNUPG:] GOODMDC"), "{status}");

            let packets = g.run(&["--list-packets"], &sealed);
            let packets = String::from_utf8_lossy(&packets.stdout).into_owned();
            assert_eq!(
                packets.matches(":pubkey enc packet: version 3").count(),
                fprs.len(),
                "{packets}"
            );
            assert!(packets.contains("tag=18"), "{packets}");
            assert!(packets.contains("mdc_method: 2"), "{packets}");
            assert!(!packets.contains("tag=20"), "{packets}");
            assert!(!packets.to_lowercase().contains("aead"), "{packets}");
            assert!(packets.contains(":onepass_sig packet:"), "{packets}");
            assert!(packets.contains(":literal data packet:"), "{packets}");
            assert!(packets.contains(":signature packet:"), "{packets}");
        }
    }
}

fn now() -> u32 {
    u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[test]
fn unusable_recipients_are_refused_with_a_reason() {
    let g = Gpg::new();
    let sign_only = g.gen_key("Sign only <s@example.org>", "ed25519", None, "never");
    // expired: made a year ago with a one-day expiry
    let mut c = g.cmd(&[
        "--faked-system-time",
        "20250101T000000!",
        "--quick-gen-key",
        "Expired <e@example.org>",
        "ed25519",
        "sign,cert",
        "1d",
    ]);
    assert!(c.output().unwrap().status.success());
    let expired = g.fingerprint("e@example.org");
    let revoked = g.gen_key(
        "Revoked <r@example.org>",
        "ed25519",
        Some("cv25519"),
        "never",
    );
    let rev = g.path(&format!("openpgp-revocs.d/{revoked}.rev"));
    let cert = std::fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    g.import(&cert);

    // (fingerprint, expected error)
    let cases: Vec<(&str, RecipientError)> = vec![
        (
            &sign_only,
            RecipientError::NoEncryptionSubkey(sign_only.clone()),
        ),
        (&expired, RecipientError::Expired(expired.clone())),
        (&revoked, RecipientError::Revoked(revoked.clone())),
    ];
    for (fpr, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let key = g.run(&["-o", "-", "--armor", "--export", fpr], b"").stdout;
        std::fs::write(dir.path().join("k.asc"), key).unwrap();
        assert_eq!(load_dir(dir.path(), now()), Err(want.clone()), "{fpr}");
        assert!(want.to_string().contains(fpr));
    }
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_dir(empty.path(), now()),
        Err(RecipientError::Empty(_))
    ));
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("junk.asc"), b"not a key").unwrap();
    assert!(matches!(
        load_dir(junk.path(), now()),
        Err(RecipientError::Parse(..))
    ));
}

#[test]
fn decrypt_time_for_5_mb_and_64_mib() {
    let a = appliance(KeyAlgo::Ed25519);
    for (name, size) in [("5 MB", 5_000_000usize), ("64 MiB", 64 << 20)] {
        let line = "The quick brown fox jumps over the lazy dog; 0123456789.\n";
        let text: String = line.repeat(size / line.len() + 1)[..size].to_string();
        let ct = a.gpg.encrypt(&a.key.fingerprint, &[], text.as_bytes());
        // the cap is on the ciphertext: 64 MiB of text compresses well
        let t = std::time::Instant::now();
        let esk = split(&ct, 64 << 20).unwrap();
        let sk = unwrap(&esk, &a.secret).unwrap();
        let got = open(&ct, &sk, Limits::default()).unwrap();
        let ms = t.elapsed().as_millis();
        assert_eq!(got.len(), size);
        println!(
            "decrypt {name} (compressed by gpg, {} bytes): {ms} ms",
            ct.len()
        );
        let ct = a
            .gpg
            .encrypt(&a.key.fingerprint, &["-z", "0"], text.as_bytes());
        let limits = Limits {
            max_ciphertext: (64 << 20) + (64 << 10),
            ..Limits::default()
        };
        let t = std::time::Instant::now();
        let esk = split(&ct, limits.max_ciphertext).unwrap();
        let sk = unwrap(&esk, &a.secret).unwrap();
        let got = open(&ct, &sk, limits).unwrap();
        let ms = t.elapsed().as_millis();
        assert_eq!(got.len(), size);
        println!("decrypt {name} (uncompressed, {} bytes): {ms} ms", ct.len());
    }
}

/// rPGP can write SEIPD v2 (with a v6 PKESK, even to a v4 key); gpg 2.2
/// cannot. The key holder refuses the v6 PKESK, and `open` refuses the
/// SEIPD v2 packet even when handed a session key.
#[test]
fn seipd_v2_is_refused() {
    use airlock_supervisor::document::secret::SessionKey;
    use pgp::composed::{MessageBuilder, SignedPublicKey};
    use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    let a = appliance(KeyAlgo::Ed25519);
    let (public, _) = SignedPublicKey::from_string(&a.key.public_armored).unwrap();
    let mut b = MessageBuilder::from_bytes("", TEXT.as_bytes().to_vec()).seipd_v2(
        rand::rngs::OsRng,
        SymmetricKeyAlgorithm::AES256,
        AeadAlgorithm::Ocb,
        ChunkSize::default(),
    );
    b.encrypt_to_key(rand::rngs::OsRng, &public.public_subkeys[0].key)
        .unwrap();
    let ct = b.to_vec(rand::rngs::OsRng).unwrap();
    assert_eq!(
        job(&ct, &a.secret, Limits::default()).unwrap_err(),
        "refused: PKESK version 6 is not supported (v3 only)"
    );
    let sk = SessionKey {
        algo: 9,
        key: zeroize::Zeroizing::new(vec![7; 32]),
    };
    assert_eq!(
        open(&ct, &sk, Limits::default()).unwrap_err().to_string(),
        "refused: SEIPD v2 is not accepted (v1 with MDC, or GnuPG OCB)"
    );
}
