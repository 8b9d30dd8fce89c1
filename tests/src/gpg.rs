//! The host's side of operator jobs, with the stock gpg (Debian's 2.2):
//! a private GNUPGHOME, the documents an operator puts on a stick
//! (encrypted to the appliance's `document-key.asc` with `gpg --encrypt`)
//! and the bad ones a hostile or careless host makes, and the check of the
//! appliance's sealed answer (`NAME.answer.gpg`): decrypted by an admin
//! key, signed by the appliance key, v3 PKESK + SEIPD v1 with MDC.
//!
//! Every gpg runs with `--batch --pinentry-mode loopback`, no keyserver,
//! no key lookup and no dirmngr; keys are made without a passphrase
//! (`%no-protection`). Each [`GpgHome`] stops its own gpg-agent when
//! dropped.
//!
//! No-MDC documents: gpg 2.2.40 ignores `--disable-mdc` (it still writes a
//! tag 18 SEIPD packet) but `--rfc2440` really writes a tag 9 Symmetrically
//! Encrypted Data packet to a public key (with a warning), so
//! [`GpgHome::encrypt_no_mdc`] uses that; no hand-crafted packets needed.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the plaintext of [`GpgHome::compression_bomb`]: 200 MiB of
/// zeros (far above the appliance's 64 MiB decompression bound).
pub const BOMB_PLAINTEXT_LEN: u64 = 200 << 20;

/// The appliance's cap on a document file (64 MiB).
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// Plaintext of [`GpgHome::encrypt_binary`]: UTF-8 up to byte 11, then
/// bytes that are no UTF-8 (the appliance names "binary data at byte 11").
pub const BINARY_PLAINTEXT: &[u8] = b"text, then \xff\xfe binary\0\x01\x02";

/// Failures of a gpg operation; each names the operation and ends with
/// the tail of gpg's stderr.
#[derive(Debug, thiserror::Error)]
pub enum GpgError {
    #[error("gpg {op}: running gpg failed (install gnupg): {source}")]
    Spawn {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gpg {op} exited with {status}: {stderr}")]
    Failed {
        op: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("gpg {op}: {what} {path} failed: {source}")]
    Io {
        op: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gpg {op}: {detail}")]
    Unexpected { op: String, detail: String },
    #[error("gpg decrypt_verify: {missing} (status: {status}; packets: {packets})")]
    NotVerified {
        missing: String,
        status: String,
        packets: String,
    },
}

/// The kinds of key [`GpgHome::generate`] makes: a signing primary key
/// and an encryption subkey of the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RSA 4096 primary (sign, cert) + RSA 4096 encryption subkey.
    Rsa4096,
    /// Ed25519 primary (sign, cert) + Cv25519 (ECDH) encryption subkey.
    Curve25519,
}

/// A public-key encrypted session key packet as `gpg --list-packets`
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkesk {
    pub version: u8,
    /// Public-key algorithm (1 RSA, 18 ECDH).
    pub algo: u8,
    /// The recipient key id (16 hex digits; zeros when hidden).
    pub keyid: String,
}

/// The facts of `gpg --list-packets` about a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packets {
    /// Every packet tag, in order (inner packets too when the home could
    /// decrypt).
    pub tags: Vec<u8>,
    /// The PKESK packets (tag 1).
    pub pkesk: Vec<Pkesk>,
    /// A tag 18 packet with `mdc_method: 2` (SEIPD v1 with MDC).
    pub seipd_mdc: bool,
    /// The whole listing.
    pub text: String,
}

impl Packets {
    /// Parses the stdout of `gpg --list-packets`.
    pub fn parse(text: &str) -> Packets {
        let mut p = Packets {
            text: text.to_owned(),
            ..Packets::default()
        };
        let mut last_tag = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# off=") {
                last_tag = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("tag="))
                    .and_then(|t| t.parse().ok());
                if let Some(t) = last_tag {
                    p.tags.push(t);
                }
            } else if let Some(rest) = line.strip_prefix(":pubkey enc packet: ") {
                // version 3, algo 18, keyid 5349FCBC63683FD3
                let field = |name: &str| {
                    rest.split(", ")
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or("")
                        .to_owned()
                };
                p.pkesk.push(Pkesk {
                    version: field("version ").parse().unwrap_or(0),
                    algo: field("algo ").parse().unwrap_or(0),
                    keyid: field("keyid "),
                });
            } else if line.trim() == "mdc_method: 2" && last_tag == Some(18) {
                p.seipd_mdc = true;
            }
        }
        p
    }

    /// Whether a packet with `tag` is listed.
    pub fn has(&self, tag: u8) -> bool {
        self.tags.contains(&tag)
    }
}

/// A verified answer of the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The decrypted answer.
    pub plaintext: Vec<u8>,
    /// The primary key fingerprint of the signer (`VALIDSIG`'s last
    /// field): the appliance key's.
    pub signer: String,
    /// `GOODSIG` was reported.
    pub good_sig: bool,
    /// `GOODMDC` was reported.
    pub good_mdc: bool,
    /// The packets (listed by the decrypting home, so inner ones too).
    pub packets: Packets,
    /// The `--status-fd` lines of the decryption.
    pub status: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The last lines of gpg's stderr, on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(4);
    let joined = lines[from..].join(" | ");
    if joined.is_empty() {
        "(no stderr)".into()
    } else {
        joined
    }
}

/// Status lines (or any text) on one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// What a gpg run reads on stdin.
enum Input<'a> {
    Bytes(&'a [u8]),
    /// `n` zero bytes, streamed.
    Zeros(u64),
}

/// What a gpg run gave.
struct Ran {
    exit: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: String,
}

impl Ran {
    fn failed(&self, op: &str) -> GpgError {
        GpgError::Failed {
            op: op.into(),
            status: self.exit,
            stderr: tail(&self.stderr),
        }
    }
}

/// A private GNUPGHOME (mode 0700) in batch mode. Dropping it stops its
/// gpg-agent (and removes a [`GpgHome::temp`] directory): do not keep one
/// in a `static`, which is never dropped.
#[derive(Debug)]
pub struct GpgHome {
    dir: PathBuf,
    /// Removed on drop ([`GpgHome::temp`]).
    owned: bool,
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        // Only this home's agent (started by gpg for this homedir).
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.dir)
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl GpgHome {
    /// Makes (or reuses) `dir` as a GNUPGHOME: mode 0700, with a gpg.conf
    /// for batch use without network and a gpg-agent.conf allowing the
    /// loopback pinentry. Keep the path short: gpg-agent's socket may
    /// live in it.
    pub fn new(dir: &Path) -> Result<GpgHome, GpgError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| GpgError::Io {
                op: "home".into(),
                what,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod 0700", dir))?;
        let conf = dir.join("gpg.conf");
        std::fs::write(
            &conf,
            "batch\nno-tty\nno-greeting\npinentry-mode loopback\n\
             no-auto-key-locate\nno-auto-key-retrieve\ndisable-dirmngr\n",
        )
        .map_err(io("writing", &conf))?;
        let agent = dir.join("gpg-agent.conf");
        std::fs::write(&agent, "allow-loopback-pinentry\n").map_err(io("writing", &agent))?;
        Ok(GpgHome {
            dir: dir.to_owned(),
            owned: false,
        })
    }

    /// A fresh home in the temporary directory, removed (and its agent
    /// stopped) on drop.
    pub fn temp() -> Result<GpgHome, GpgError> {
        let dir =
            std::env::temp_dir().join(format!("airlock-gpg-{}-{}", std::process::id(), seq()));
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let mut home = GpgHome::new(&dir)?;
        home.owned = true;
        Ok(home)
    }

    /// The home directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `gpg` with this home and the batch options, for what this module
    /// does not cover.
    pub fn command(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(&self.dir)
            .args(["--batch", "--no-tty", "--yes"])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--no-auto-key-locate", "--no-auto-key-retrieve"])
            .args(["--disable-dirmngr", "--trust-model", "always"]);
        c
    }

    /// Runs gpg with `args`, feeding `input`; stdout and the status lines
    /// (`--status-file`) on success, `op` and stderr's tail otherwise.
    fn run(&self, op: &str, args: &[&str], input: Input<'_>) -> Result<Ran, GpgError> {
        let ran = self.run_unchecked(op, args, input)?;
        if ran.exit.success() {
            Ok(ran)
        } else {
            Err(ran.failed(op))
        }
    }

    /// [`GpgHome::run`], whatever gpg's exit status.
    fn run_unchecked(&self, op: &str, args: &[&str], input: Input<'_>) -> Result<Ran, GpgError> {
        let status_file = self.dir.join(format!("status-{}", seq()));
        let mut child = self
            .command()
            .arg("--status-file")
            .arg(&status_file)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GpgError::Spawn {
                op: op.into(),
                source,
            })?;
        let mut stdin = child.stdin.take();
        let out = std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(mut w) = stdin.take() {
                    // gpg may stop reading early (an error): that shows in
                    // its exit status, not here.
                    let _ = match input {
                        Input::Bytes(b) => w.write_all(b),
                        Input::Zeros(mut n) => {
                            let zeros = vec![0u8; 1 << 20];
                            let mut r = Ok(());
                            while n > 0 && r.is_ok() {
                                let k = n.min(zeros.len() as u64) as usize;
                                r = w.write_all(&zeros[..k]);
                                n -= k as u64;
                            }
                            r
                        }
                    };
                }
            });
            child.wait_with_output()
        })
        .map_err(|source| GpgError::Spawn {
            op: op.into(),
            source,
        })?;
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        let _ = std::fs::remove_file(&status_file);
        Ok(Ran {
            exit: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            status,
        })
    }

    /// Imports the keys in `path` (armored or binary); their primary
    /// fingerprints.
    pub fn import(&self, path: &Path) -> Result<Vec<String>, GpgError> {
        let bytes = std::fs::read(path).map_err(|source| GpgError::Io {
            op: "--import".into(),
            what: "reading",
            path: path.to_owned(),
            source,
        })?;
        self.import_bytes(&bytes)
    }

    /// Imports keys from bytes (e.g. `document-key.asc` read off a stick);
    /// their primary fingerprints.
    pub fn import_bytes(&self, key: &[u8]) -> Result<Vec<String>, GpgError> {
        let ran = self.run("--import", &["--import"], Input::Bytes(key))?;
        let mut fprs: Vec<String> = ran
            .status
            .lines()
            .filter_map(|l| l.strip_prefix("[GNUPG:] IMPORT_OK "))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        fprs.dedup();
        if fprs.is_empty() {
            return Err(GpgError::Unexpected {
                op: "--import".into(),
                detail: format!("no key imported (status: {})", one_line(&ran.status)),
            });
        }
        Ok(fprs)
    }

    /// The primary fingerprints of every public key in the home.
    pub fn fingerprints(&self) -> Result<Vec<String>, GpgError> {
        let ran = self.run(
            "--list-keys",
            &["--with-colons", "--list-keys"],
            Input::Bytes(b""),
        )?;
        let text = String::from_utf8_lossy(&ran.stdout);
        let mut fprs = Vec::new();
        let mut want = false;
        for line in text.lines() {
            if line.starts_with("pub:") {
                want = true;
            } else if line.starts_with("sub:") {
                want = false;
            } else if want && line.starts_with("fpr:") {
                if let Some(f) = line.split(':').nth(9) {
                    fprs.push(f.to_owned());
                }
                want = false;
            }
        }
        Ok(fprs)
    }

    /// The key id (16 hex digits) of the encryption subkey of `fpr`, as a
    /// PKESK names it.
    pub fn encryption_keyid(&self, fpr: &str) -> Result<String, GpgError> {
        let ran = self.run(
            "--list-keys",
            &["--with-colons", "--list-keys", fpr],
            Input::Bytes(b""),
        )?;
        let text = String::from_utf8_lossy(&ran.stdout);
        text.lines()
            .find(|l| {
                l.starts_with("sub:") && l.split(':').nth(11).is_some_and(|c| c.contains('e'))
            })
            .and_then(|l| l.split(':').nth(4))
            .map(str::to_owned)
            .ok_or_else(|| GpgError::Unexpected {
                op: "--list-keys".into(),
                detail: format!("{fpr} has no encryption subkey"),
            })
    }

    /// Makes a key without passphrase (`%no-protection`): a signing
    /// primary and an encryption subkey of `kind`, user id `uid`
    /// (`Name <email>` or a bare name); its fingerprint. RSA 4096 takes a
    /// few seconds.
    pub fn generate(&self, kind: Kind, uid: &str) -> Result<String, GpgError> {
        let (name, email) = match uid.strip_suffix('>').and_then(|u| u.split_once(" <")) {
            Some((n, e)) => (n, Some(e)),
            None => (uid, None),
        };
        let algo = match kind {
            Kind::Rsa4096 => {
                "Key-Type: RSA\nKey-Length: 4096\nSubkey-Type: RSA\nSubkey-Length: 4096\n"
            }
            Kind::Curve25519 => {
                "Key-Type: EDDSA\nKey-Curve: ed25519\nSubkey-Type: ECDH\nSubkey-Curve: cv25519\n"
            }
        };
        let mut params = format!(
            "%no-protection\n{algo}Key-Usage: sign,cert\nSubkey-Usage: encrypt\n\
             Name-Real: {name}\nExpire-Date: 0\n"
        );
        if let Some(e) = email {
            params.push_str(&format!("Name-Email: {e}\n"));
        }
        params.push_str("%commit\n");
        let ran = self.run(
            "--generate-key",
            &["--generate-key"],
            Input::Bytes(params.as_bytes()),
        )?;
        ran.status
            .lines()
            .find_map(|l| l.strip_prefix("[GNUPG:] KEY_CREATED "))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
            .ok_or_else(|| GpgError::Unexpected {
                op: "--generate-key".into(),
                detail: format!("no KEY_CREATED (status: {})", one_line(&ran.status)),
            })
    }

    /// The public key `fpr`, armored (as an admin hands it to the
    /// appliance).
    pub fn export_public(&self, fpr: &str) -> Result<Vec<u8>, GpgError> {
        let ran = self.run(
            "--export",
            &["--armor", "-o", "-", "--export", fpr],
            Input::Bytes(b""),
        )?;
        if ran.stdout.is_empty() {
            return Err(GpgError::Unexpected {
                op: "--export".into(),
                detail: format!("no public key {fpr} in the home"),
            });
        }
        Ok(ran.stdout)
    }

    /// `gpg -r RECIPIENT EXTRA... -o - --encrypt`.
    fn encrypt_with(
        &self,
        op: &str,
        input: Input<'_>,
        recipient: &str,
        extra: &[&str],
    ) -> Result<Vec<u8>, GpgError> {
        let mut args = vec!["-r", recipient, "-o", "-"];
        args.extend_from_slice(extra);
        args.push("--encrypt");
        Ok(self.run(op, &args, input)?.stdout)
    }

    /// Stock `gpg --encrypt` to `recipient` (binary, compressed, SEIPD
    /// with MDC): what an operator puts on the stick.
    pub fn encrypt(&self, plaintext: &[u8], recipient: &str) -> Result<Vec<u8>, GpgError> {
        self.encrypt_with("--encrypt", Input::Bytes(plaintext), recipient, &[])
    }

    /// `gpg --sign --encrypt`, signed by `signer` (a secret key of this
    /// home).
    pub fn sign_encrypt(
        &self,
        plaintext: &[u8],
        recipient: &str,
        signer: &str,
    ) -> Result<Vec<u8>, GpgError> {
        self.encrypt_with(
            "--sign --encrypt",
            Input::Bytes(plaintext),
            recipient,
            &["-u", signer, "--sign"],
        )
    }

    /// `gpg --armor --encrypt`.
    pub fn encrypt_armored(&self, plaintext: &[u8], recipient: &str) -> Result<Vec<u8>, GpgError> {
        self.encrypt_with(
            "--armor --encrypt",
            Input::Bytes(plaintext),
            recipient,
            &["--armor"],
        )
    }

    /// `gpg --sign` by `signer` (a secret key of this home): signed,
    /// compressed, not encrypted.
    pub fn sign_only(&self, plaintext: &[u8], signer: &str) -> Result<Vec<u8>, GpgError> {
        Ok(self
            .run(
                "--sign",
                &["-u", signer, "-o", "-", "--sign"],
                Input::Bytes(plaintext),
            )?
            .stdout)
    }

    /// Encrypted to `recipient` without integrity protection: a PKESK and
    /// a tag 9 Symmetrically Encrypted Data packet (`--rfc2440`, AES256;
    /// gpg 2.2 ignores `--disable-mdc`).
    pub fn encrypt_no_mdc(&self, plaintext: &[u8], recipient: &str) -> Result<Vec<u8>, GpgError> {
        self.encrypt_with(
            "--rfc2440 --encrypt",
            Input::Bytes(plaintext),
            recipient,
            &["--rfc2440", "--cipher-algo", "AES256"],
        )
    }

    /// Encrypted properly, but to a key that is not the appliance's: a
    /// Curve25519 key "Someone Else <else@airlock.test>" made in this home
    /// on first use. The ciphertext and that key's fingerprint.
    pub fn encrypt_to_other_key(&self, plaintext: &[u8]) -> Result<(Vec<u8>, String), GpgError> {
        const UID: &str = "Someone Else <else@airlock.test>";
        let ran = self.run(
            "--list-keys",
            &["--with-colons", "--list-keys"],
            Input::Bytes(b""),
        )?;
        let text = String::from_utf8_lossy(&ran.stdout).into_owned();
        let mut fpr = None;
        let mut current = None;
        for line in text.lines() {
            if line.starts_with("pub:") {
                current = None;
            } else if line.starts_with("fpr:") && current.is_none() {
                current = line.split(':').nth(9).map(str::to_owned);
            } else if line.starts_with("uid:") && line.split(':').nth(9) == Some(UID) {
                fpr.clone_from(&current);
            }
        }
        let fpr = match fpr {
            Some(f) => f,
            None => self.generate(Kind::Curve25519, UID)?,
        };
        Ok((self.encrypt(plaintext, &fpr)?, fpr))
    }

    /// [`BOMB_PLAINTEXT_LEN`] zeros encrypted to `recipient` with `zlib -z
    /// 9`: about 260 KiB on the stick.
    pub fn compression_bomb(&self, recipient: &str) -> Result<Vec<u8>, GpgError> {
        self.encrypt_with(
            "--compress-algo zlib -z 9 --encrypt (bomb)",
            Input::Zeros(BOMB_PLAINTEXT_LEN),
            recipient,
            &["--compress-algo", "zlib", "-z", "9"],
        )
    }

    /// [`BINARY_PLAINTEXT`] (not UTF-8) encrypted properly.
    pub fn encrypt_binary(&self, recipient: &str) -> Result<Vec<u8>, GpgError> {
        self.encrypt(BINARY_PLAINTEXT, recipient)
    }

    /// A genuine message of `len` pseudo-random bytes encrypted without
    /// compression (`-z 0`): the ciphertext is a little over `len`. Use
    /// `len` > [`MAX_DOCUMENT`] for the oversized-input case.
    pub fn encrypt_oversized(&self, recipient: &str, len: usize) -> Result<Vec<u8>, GpgError> {
        let plain = garbage(len);
        self.encrypt_with(
            "-z 0 --encrypt (oversized)",
            Input::Bytes(&plain),
            recipient,
            &["-z", "0"],
        )
    }

    /// `gpg --list-packets` of `message`. The exit status is not looked
    /// at (gpg exits 2 when the home cannot decrypt it, after listing the
    /// outer packets); fails only when nothing was listed.
    pub fn list_packets(&self, message: &[u8]) -> Result<Packets, GpgError> {
        let op = "--list-packets";
        let mut child = self
            .command()
            .arg(op)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GpgError::Spawn {
                op: op.into(),
                source,
            })?;
        let stdin = child.stdin.take();
        let out = std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(mut w) = stdin {
                    let _ = w.write_all(message);
                }
            });
            child.wait_with_output()
        })
        .map_err(|source| GpgError::Spawn {
            op: op.into(),
            source,
        })?;
        let packets = Packets::parse(&String::from_utf8_lossy(&out.stdout));
        if packets.tags.is_empty() {
            return Err(GpgError::Failed {
                op: op.into(),
                status: out.status,
                stderr: tail(&out.stderr),
            });
        }
        Ok(packets)
    }

    /// Decrypts `message` with a secret key of this home; the plaintext.
    pub fn decrypt(&self, message: &[u8]) -> Result<Vec<u8>, GpgError> {
        Ok(self
            .run(
                "--decrypt",
                &["-o", "-", "--decrypt"],
                Input::Bytes(message),
            )?
            .stdout)
    }

    /// Decrypts `message` and counts the plaintext bytes without keeping
    /// them (e.g. a compression bomb).
    pub fn decrypted_len(&self, message: &[u8]) -> Result<u64, GpgError> {
        let op = "--decrypt (count)";
        let err = |source| GpgError::Spawn {
            op: op.into(),
            source,
        };
        let mut child = self
            .command()
            .args(["-o", "-", "--decrypt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(err)?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (n, errs) = std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(mut w) = stdin {
                    let _ = w.write_all(message);
                }
            });
            let errs = s.spawn(move || {
                let mut b = Vec::new();
                if let Some(e) = stderr.as_mut() {
                    let _ = e.read_to_end(&mut b);
                }
                b
            });
            let n = match stdout.as_mut() {
                Some(o) => std::io::copy(o, &mut std::io::sink()),
                None => Ok(0),
            };
            (n, errs.join().unwrap_or_default())
        });
        let n = n.map_err(err)?;
        let status = child.wait().map_err(err)?;
        if !status.success() {
            return Err(GpgError::Failed {
                op: op.into(),
                status,
                stderr: tail(&errs),
            });
        }
        Ok(n)
    }

    /// Checks an answer of the appliance as an admin does: imports
    /// `appliance_pubkey` (`document-key.asc`), decrypts `answer` with a
    /// secret key of this home, and requires v3 PKESKs, a tag 18 SEIPD
    /// with MDC (no tag 9, no tag 20 OCB), `GOODMDC`, a `VALIDSIG` whose
    /// primary key is the appliance key, and `GOODSIG`. The first fact
    /// missing is the error; a message this home cannot decrypt at all is
    /// gpg's failure.
    pub fn decrypt_verify(
        &self,
        answer: &[u8],
        appliance_pubkey: &[u8],
    ) -> Result<Verified, GpgError> {
        const OP: &str = "--decrypt (answer)";
        let appliance = self.import_bytes(appliance_pubkey)?;
        // gpg exits 2 for a signature it cannot check or a message
        // without MDC: those are reported as the missing fact below.
        let ran = self.run_unchecked(OP, &["-o", "-", "--decrypt"], Input::Bytes(answer))?;
        let status = ran.status.clone();
        let okay = status.contains("[GNUPG:] DECRYPTION_OKAY");
        let packets = match self.list_packets(answer) {
            Ok(p) if okay || p.has(9) => p,
            Err(e) if okay => return Err(e),
            _ => return Err(ran.failed(OP)),
        };
        let signer = status
            .lines()
            .filter_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
            .filter_map(|l| l.split_whitespace().nth(9))
            .find(|f| appliance.iter().any(|a| a == f))
            .map(str::to_owned);
        let good_sig = status.contains("[GNUPG:] GOODSIG ");
        let good_mdc = status.contains("[GNUPG:] GOODMDC");
        let missing = if packets.pkesk.is_empty() {
            Some("no PKESK packet (not encrypted to a public key)".to_owned())
        } else if let Some(p) = packets.pkesk.iter().find(|p| p.version != 3) {
            Some(format!("a PKESK of version {} (v3 expected)", p.version))
        } else if packets.has(9) {
            Some("a tag 9 packet: no MDC (integrity protection)".into())
        } else if packets.has(20) {
            Some("a tag 20 (OCB) packet".into())
        } else if !packets.seipd_mdc {
            Some("no tag 18 SEIPD packet with MDC".into())
        } else if !good_mdc {
            Some("no GOODMDC".into())
        } else if signer.is_none() {
            Some(format!(
                "no VALIDSIG by the appliance key {}",
                appliance.join(",")
            ))
        } else if !good_sig {
            Some("no GOODSIG".into())
        } else {
            None
        };
        if let Some(missing) = missing {
            return Err(GpgError::NotVerified {
                missing,
                status: one_line(&status),
                packets: packets
                    .tags
                    .iter()
                    .map(|t| format!("tag {t}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if !ran.exit.success() {
            return Err(ran.failed(OP));
        }
        Ok(Verified {
            plaintext: ran.stdout,
            signer: signer.unwrap_or_default(),
            good_sig,
            good_mdc,
            packets,
            status,
        })
    }
}

/// `n` deterministic pseudo-random bytes that are no OpenPGP message (the
/// first byte has bit 7 clear). Fast enough for 100 MiB.
pub fn garbage(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < n {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    if let Some(b) = out.first_mut() {
        *b &= 0x7f;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const TEXT: &[u8] = "Quarterly report, Grüße from the host.\nTotal: 1,234.50 EUR.\n".as_bytes();

    /// Stands for the appliance (its secret key) and for the operator's
    /// host (the appliance's public key only, as `document-key.asc`).
    struct Pair {
        appliance: GpgHome,
        host: GpgHome,
        fpr: String,
        public: Vec<u8>,
    }

    /// A fresh pair per test, not a static one: a static GpgHome is never
    /// dropped, so its gpg-agent and directory would outlive the tests.
    fn pair(kind: Kind) -> Pair {
        {
            let appliance = GpgHome::temp().unwrap();
            let t = std::time::Instant::now();
            let fpr = appliance
                .generate(kind, "Airlock appliance <appliance@airlock.test>")
                .unwrap();
            println!("generate {kind:?}: {:.2} s", t.elapsed().as_secs_f64());
            let public = appliance.export_public(&fpr).unwrap();
            let host = GpgHome::temp().unwrap();
            let dir = host.dir().join("document-key.asc");
            std::fs::write(&dir, &public).unwrap();
            assert_eq!(host.import(&dir).unwrap(), std::slice::from_ref(&fpr));
            let operator = host
                .generate(Kind::Curve25519, "Operator <op@airlock.test>")
                .unwrap();
            // the appliance checks signed documents' signatures only here
            appliance
                .import_bytes(&host.export_public(&operator).unwrap())
                .unwrap();
            Pair {
                appliance,
                host,
                fpr,
                public,
            }
        }
    }

    #[test]
    fn gpg_home_is_private_and_generates_both_kinds() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = GpgHome::temp().unwrap();
        let mode = std::fs::metadata(home.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(home.fingerprints().unwrap().is_empty());
        let rsa = &pair(Kind::Rsa4096);
        let cv = &pair(Kind::Curve25519);
        // (pair, primary algo, encryption subkey algo in --with-colons)
        for (p, pub_algo, sub_algo) in [(rsa, "1", "1"), (cv, "22", "18")] {
            assert_eq!(p.fpr.len(), 40);
            assert!(p.appliance.fingerprints().unwrap().contains(&p.fpr));
            assert!(
                String::from_utf8_lossy(&p.public).starts_with("-----BEGIN PGP PUBLIC KEY BLOCK")
            );
            let out = p
                .appliance
                .command()
                .args(["--with-colons", "--list-secret-keys", &p.fpr])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let sec = text.lines().find(|l| l.starts_with("sec:")).unwrap();
            let ssb = text.lines().find(|l| l.starts_with("ssb:")).unwrap();
            assert_eq!(sec.split(':').nth(3), Some(pub_algo), "{text}");
            assert_eq!(ssb.split(':').nth(3), Some(sub_algo), "{text}");
            assert!(ssb.split(':').nth(11).unwrap().contains('e'), "{text}");
            assert_eq!(p.host.encryption_keyid(&p.fpr).unwrap().len(), 16);
        }
        // the home is removed on drop
        let dir = home.dir().to_owned();
        drop(home);
        assert!(!dir.exists());
    }

    #[test]
    fn encrypted_inputs_round_trip() {
        for kind in [Kind::Rsa4096, Kind::Curve25519] {
            let p = &pair(kind);
            let signer = p.host.fingerprints().unwrap()[1].clone();
            assert_ne!(signer, p.fpr);
            // (name, ciphertext, plaintext, armored)
            let cases: Vec<(&str, Vec<u8>, &[u8], bool)> = vec![
                (
                    "encrypt",
                    p.host.encrypt(TEXT, &p.fpr).unwrap(),
                    TEXT,
                    false,
                ),
                (
                    "sign_encrypt",
                    p.host.sign_encrypt(TEXT, &p.fpr, &signer).unwrap(),
                    TEXT,
                    false,
                ),
                (
                    "encrypt_armored",
                    p.host.encrypt_armored(TEXT, &p.fpr).unwrap(),
                    TEXT,
                    true,
                ),
                (
                    "encrypt_binary",
                    p.host.encrypt_binary(&p.fpr).unwrap(),
                    BINARY_PLAINTEXT,
                    false,
                ),
            ];
            let keyid = p.host.encryption_keyid(&p.fpr).unwrap();
            for (name, ct, plain, armored) in cases {
                assert_eq!(
                    ct.starts_with(b"-----BEGIN PGP MESSAGE-----"),
                    armored,
                    "{kind:?} {name}"
                );
                assert_eq!(p.appliance.decrypt(&ct).unwrap(), plain, "{kind:?} {name}");
                let packets = p.host.list_packets(&ct).unwrap();
                assert_eq!(packets.pkesk.len(), 1, "{kind:?} {name}: {}", packets.text);
                assert_eq!(packets.pkesk[0].version, 3);
                assert_eq!(packets.pkesk[0].keyid, keyid);
                assert!(packets.seipd_mdc, "{kind:?} {name}: {}", packets.text);
            }
        }
        // not UTF-8 from byte 11 on
        let plain = std::hint::black_box(BINARY_PLAINTEXT);
        assert_eq!(std::str::from_utf8(plain).unwrap_err().valid_up_to(), 11);
    }

    #[test]
    fn bad_inputs_are_what_they_claim() {
        let p = &pair(Kind::Curve25519);
        let signer = p.host.fingerprints().unwrap()[1].clone();

        // no MDC: a PKESK to the appliance and a tag 9 packet, no tag 18
        let no_mdc = p.host.encrypt_no_mdc(TEXT, &p.fpr).unwrap();
        let l = p.host.list_packets(&no_mdc).unwrap();
        assert_eq!(l.tags[..2], [1, 9], "{}", l.text);
        assert!(!l.has(18) && !l.seipd_mdc, "{}", l.text);
        assert!(l.text.contains(":encrypted data packet:"), "{}", l.text);
        assert_eq!(l.pkesk[0].keyid, p.host.encryption_keyid(&p.fpr).unwrap());
        // gpg 2.2.40 itself refuses it, unless told to ignore the MDC
        let err = p.appliance.decrypt(&no_mdc).unwrap_err().to_string();
        assert!(err.contains("decryption forced to fail"), "{err}");
        let mut c = p.appliance.command();
        c.args(["--ignore-mdc-error", "-o", "-", "-d", "--"])
            .arg(p.appliance.dir().join("no-mdc.gpg"));
        std::fs::write(p.appliance.dir().join("no-mdc.gpg"), &no_mdc).unwrap();
        assert_eq!(c.output().unwrap().stdout, TEXT);

        // signed only: a one-pass signature, literal data, signature; no
        // PKESK, nothing encrypted
        let signed = p.host.sign_only(TEXT, &signer).unwrap();
        let l = p.host.list_packets(&signed).unwrap();
        assert!(l.pkesk.is_empty() && !l.has(1), "{}", l.text);
        assert!(!l.has(18) && !l.has(9), "{}", l.text);
        assert!(l.has(4) && l.has(11) && l.has(2), "{}", l.text);

        // to another key: a PKESK to that key's subkey, not the appliance's
        let (other, other_fpr) = p.host.encrypt_to_other_key(TEXT).unwrap();
        let (again, same_fpr) = p.host.encrypt_to_other_key(TEXT).unwrap();
        assert_eq!(other_fpr, same_fpr, "the other key is made once");
        assert_ne!(other_fpr, p.fpr);
        let l = p.host.list_packets(&other).unwrap();
        assert_eq!(l.pkesk.len(), 1);
        assert_eq!(
            l.pkesk[0].keyid,
            p.host.encryption_keyid(&other_fpr).unwrap()
        );
        assert_ne!(l.pkesk[0].keyid, p.host.encryption_keyid(&p.fpr).unwrap());
        assert!(p.appliance.decrypt(&again).is_err());

        // bomb: small on the stick, 200 MiB once decompressed
        let t = std::time::Instant::now();
        let bomb = p.host.compression_bomb(&p.fpr).unwrap();
        println!(
            "bomb: {} bytes on the stick, made in {:.2} s",
            bomb.len(),
            t.elapsed().as_secs_f64()
        );
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let l = p.appliance.list_packets(&bomb).unwrap();
        assert!(l.seipd_mdc && l.has(8), "{}", l.text);
        assert!(l.text.contains(":compressed packet: algo=2"), "{}", l.text);
        assert_eq!(
            p.appliance.decrypted_len(&bomb).unwrap(),
            BOMB_PLAINTEXT_LEN
        );

        // garbage: deterministic, no OpenPGP packet
        let g = garbage(4096);
        assert_eq!(g.len(), 4096);
        assert_eq!(g, garbage(4096));
        assert!(g[0] & 0x80 == 0);
        assert!(p.host.list_packets(&g).is_err());
        assert!(garbage(0).is_empty());

        // oversized: a real message larger than the 64 MiB cap
        let t = std::time::Instant::now();
        let big = p
            .host
            .encrypt_oversized(&p.fpr, (MAX_DOCUMENT + (1 << 20)) as usize)
            .unwrap();
        println!(
            "oversized: {} bytes in {:.2} s",
            big.len(),
            t.elapsed().as_secs_f64()
        );
        assert!(big.len() as u64 > MAX_DOCUMENT + (1 << 20));
        let l = p.host.list_packets(&big[..4096]).unwrap();
        assert_eq!(l.tags[..2], [1, 18], "{}", l.text);
    }

    /// An answer as the appliance writes it: signed by its key, encrypted
    /// to an admin key (what `seal` writes; here gpg stands in).
    #[test]
    fn answers_are_verified_or_refused_with_the_missing_fact() {
        let p = &pair(Kind::Curve25519);
        let admin = GpgHome::temp().unwrap();
        let admin_fpr = admin
            .generate(Kind::Rsa4096, "Admin <admin@airlock.test>")
            .unwrap();
        p.appliance
            .import_bytes(&admin.export_public(&admin_fpr).unwrap())
            .unwrap();
        let answer = b"Summary: three suppliers.\n";
        let good = p
            .appliance
            .sign_encrypt(answer, &admin_fpr, &p.fpr)
            .unwrap();
        let v = admin.decrypt_verify(&good, &p.public).unwrap();
        assert_eq!(v.plaintext, answer);
        assert_eq!(v.signer, p.fpr);
        assert!(v.good_sig && v.good_mdc && v.packets.seipd_mdc);
        assert_eq!(v.packets.pkesk.len(), 1);
        // inner packets listed too: the admin home can decrypt
        assert!(v.packets.has(4) && v.packets.has(11) && v.packets.has(2));

        let other_signer = p.host.fingerprints().unwrap()[1].clone();
        p.host
            .import_bytes(&admin.export_public(&admin_fpr).unwrap())
            .unwrap();
        // (name, answer, expected start of the error)
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "not signed",
                p.appliance.encrypt(answer, &admin_fpr).unwrap(),
                "gpg decrypt_verify: no VALIDSIG by the appliance key",
            ),
            (
                "signed by another key",
                p.host
                    .sign_encrypt(answer, &admin_fpr, &other_signer)
                    .unwrap(),
                "gpg decrypt_verify: no VALIDSIG by the appliance key",
            ),
            (
                "no MDC",
                p.appliance
                    .run(
                        "test",
                        &[
                            "-r",
                            &admin_fpr,
                            "-u",
                            &p.fpr,
                            "--rfc2440",
                            "-o",
                            "-",
                            "--sign",
                            "--encrypt",
                        ],
                        Input::Bytes(answer),
                    )
                    .unwrap()
                    .stdout,
                "gpg decrypt_verify: a tag 9 packet: no MDC",
            ),
            (
                "not for this admin",
                p.appliance.sign_encrypt(answer, &p.fpr, &p.fpr).unwrap(),
                "gpg --decrypt (answer) exited with",
            ),
            (
                "garbage",
                garbage(300),
                "gpg --decrypt (answer) exited with",
            ),
        ];
        for (name, ct, want) in cases {
            let err = admin
                .decrypt_verify(&ct, &p.public)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{name}: {err}");
            assert!(!err.contains('\n'), "{name}: one line: {err}");
        }
        let err = admin.decrypt_verify(&good, b"not a key").unwrap_err();
        assert!(err.to_string().starts_with("gpg --import"), "{err}");
    }
}
