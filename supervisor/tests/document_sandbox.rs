//! The split of a document job across processes: `airlock-init doc-open`
//! runs on the sandbox's spawn path (namespaces, Landlock, the worker's
//! stage-2 seccomp, confirmed by the spawner) and speaks the frames of
//! `document::frame` on its stdin/stdout; this test plays the parent and
//! the key holder (`unwrap` on the Esk frame only). Also the same exchange
//! in-process over a socket pair. The sandboxed part runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use airlock_sandbox::{spawn, ExitStatus};
use airlock_supervisor::document::frame::{
    read_frame, read_outcome, serve_open, session_key_body, write_frame, Kind, Outcome, Served,
};
use airlock_supervisor::document::open::Limits;
use airlock_supervisor::document::seal::{seal, Form};
use airlock_supervisor::document::unwrap::{unwrap, MAX_ESK_BYTES};
use airlock_supervisor::identity::pgpkey::{self, KeyAlgo};
use pgp::composed::{Deserializable as _, SignedPublicKey, SignedSecretKey};

const BIN: &str = env!("CARGO_BIN_EXE_airlock-init");

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid 2-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The appliance's key (secret) and a document sealed to it by a sender
/// (signed and encrypted, as a user's gpg --sign --encrypt would be).
fn fixture(text: &str) -> (SignedSecretKey, Vec<u8>) {
    let appliance = pgpkey::generate(KeyAlgo::Ed25519, "Airlock <t>", 1_750_000_000).unwrap();
    let sender = pgpkey::generate(KeyAlgo::Ed25519, "Sender <s>", 1_750_000_000).unwrap();
    let secret = pgpkey::parse_secret(&appliance.secret).unwrap();
    let (public, _) = SignedPublicKey::from_string(&appliance.public_armored).unwrap();
    let sender = pgpkey::parse_secret(&sender.secret).unwrap();
    let now = 1_800_000_000;
    let msg = seal(text, &sender, &[public], now, Form::Binary).unwrap();
    (secret, msg)
}

/// Plays the parent over `to_child`/`from_child`: returns the outcome.
fn parent(
    to_child: &mut impl std::io::Write,
    from_child: &mut impl std::io::Read,
    ciphertext: &[u8],
    key: &SignedSecretKey,
) -> Outcome {
    write_frame(to_child, Kind::Ciphertext, ciphertext).unwrap();
    let (kind, body) = read_frame(from_child, MAX_ESK_BYTES.max(4096)).unwrap();
    match kind {
        Kind::Esk => {}
        Kind::Refused => return Outcome::Refused(String::from_utf8_lossy(&body).into_owned()),
        other => panic!("unexpected {other:?}"),
    }
    match unwrap(&body, key) {
        Ok(sk) => write_frame(to_child, Kind::SessionKey, &session_key_body(&sk)).unwrap(),
        Err(e) => {
            write_frame(to_child, Kind::Abort, b"").unwrap();
            return Outcome::Refused(e.to_string());
        }
    }
    read_outcome(from_child, 64 << 20).unwrap()
}

fn text_of(o: Outcome) -> Result<String, String> {
    match o {
        Outcome::Text(t) => Ok(t.as_str().unwrap().to_string()),
        Outcome::Refused(r) => Err(r),
    }
}

const DOC: &str = "A document for the sandboxed opener.\nSecond line.\n";

#[test]
fn the_exchange_in_process_over_a_socket_pair() {
    let (key, msg) = fixture(DOC);
    let (mut a, b) = UnixStream::pair().unwrap();
    let child = std::thread::spawn(move || {
        let mut r = b.try_clone().unwrap();
        let mut w = b;
        serve_open(&mut r, &mut w, Limits::default()).unwrap()
    });
    let mut r = a.try_clone().unwrap();
    assert_eq!(
        text_of(parent(&mut a, &mut r, &msg, &key)).as_deref(),
        Ok(DOC)
    );
    assert_eq!(child.join().unwrap(), Served::Opened);
}

/// Runs one exchange with `airlock-init doc-open` in the sandbox.
fn sandboxed(ciphertext: &[u8], key: &SignedSecretKey) -> (Result<String, String>, String) {
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let mut spec = airlock_supervisor::document::child::spec(Path::new(BIN), Limits::default());
    spec.fds.push((in_r, 0));
    spec.fds.push((out_w, 1));
    spec.fds.push((err_w, 2));
    let mut child = spawn(spec).unwrap();
    let mut to_child = File::from(in_w);
    let mut from_child = File::from(out_r);
    let outcome = parent(&mut to_child, &mut from_child, ciphertext, key);
    drop(to_child);
    let st = child.wait_timeout(Duration::from_secs(60)).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut File::from(err_r), &mut err).unwrap();
    assert_eq!(st, Some(ExitStatus::Exited(0)), "stderr: {err}");
    (text_of(outcome), err)
}

#[test]
fn doc_open_runs_in_the_sandbox_and_returns_the_text_or_the_reason() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the sandbox needs root");
        return;
    }
    let (key, msg) = fixture(DOC);
    let (_, to_other) = fixture(DOC);
    let mut flipped = msg.clone();
    let n = flipped.len() - 30;
    flipped[n] ^= 0x04;
    // (name, input, expected)
    let cases: Vec<(&str, Vec<u8>, Result<String, String>)> = vec![
        ("signed and encrypted", msg, Ok(DOC.to_string())),
        (
            "bit flipped",
            flipped,
            Err("refused: integrity check failed: the ciphertext was modified or truncated".into()),
        ),
        (
            "to another key (the parent aborts after unwrap)",
            to_other,
            Err("not encrypted to this appliance's key (recipients: ".into()),
        ),
        (
            "garbage",
            b"\xa3\x01garbage that is not OpenPGP".to_vec(),
            Err("refused: not an OpenPGP message".into()),
        ),
    ];
    for (name, input, want) in cases {
        let (got, err) = sandboxed(&input, &key);
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{name}"),
            (Err(g), Err(w)) => assert!(g.starts_with(w.as_str()), "{name}: {g:?} vs {w:?}"),
            _ => panic!("{name}: got {got:?}, want {want:?}; stderr {err}"),
        }
    }
}

/// A large document through the sandboxed opener: its buffers grow past
/// glibc's mmap threshold, so this exercises the memory calls of the
/// opener's seccomp profile.
#[test]
fn a_large_document_opens_in_the_sandbox() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the sandbox needs root");
        return;
    }
    let line = "A long document, line after line, for the sandboxed opener.\n";
    let text = line.repeat((24 << 20) / line.len());
    let (key, msg) = fixture(&text);
    let (got, err) = sandboxed(&msg, &key);
    assert_eq!(got.map(|t| t.len()), Ok(text.len()), "stderr: {err}");
}

/// A compression bomb (200 MiB of zeros, ZLIB) refused inside the sandbox
/// at the 64 MiB bound.
#[test]
fn a_compression_bomb_is_refused_in_the_sandbox() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the sandbox needs root");
        return;
    }
    use pgp::composed::MessageBuilder;
    use pgp::crypto::sym::SymmetricKeyAlgorithm;
    use pgp::types::CompressionAlgorithm;
    let appliance = pgpkey::generate(KeyAlgo::Ed25519, "Airlock <t>", 1_750_000_000).unwrap();
    let key = pgpkey::parse_secret(&appliance.secret).unwrap();
    let (public, _) = SignedPublicKey::from_string(&appliance.public_armored).unwrap();
    let mut b = MessageBuilder::from_bytes("", vec![0u8; 200 << 20])
        .seipd_v1(rand::rngs::OsRng, SymmetricKeyAlgorithm::AES256);
    b.compression(CompressionAlgorithm::ZLIB);
    b.encrypt_to_key(rand::rngs::OsRng, &public.public_subkeys[0].key)
        .unwrap();
    let bomb = b.to_vec(rand::rngs::OsRng).unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let (got, err) = sandboxed(&bomb, &key);
    assert_eq!(
        got,
        Err(format!(
            "refused: decompressed size exceeds {} bytes",
            64 << 20
        )),
        "stderr: {err}"
    );
}
