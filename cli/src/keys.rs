//! `airlock key ...` and key-file loading shared by the other commands.

use crate::{KeyCmd, PassArgs};
use airlock_formats::escape;
use airlock_formats::minisig::{MinisigError, Protection, PublicKey, SecretKey};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// Errors of key handling; each names the failing operation.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key { path: String, source: MinisigError },
    #[error("{0} exists (use --force to overwrite)")]
    Exists(String),
    #[error("invalid key name {0:?} (1-64 of A-Z a-z 0-9 . _ -)")]
    Name(String),
    #[error("passphrase: {0}")]
    Passphrase(String),
}

pub fn run(cmd: KeyCmd) -> Result<(), String> {
    match cmd {
        KeyCmd::Generate {
            name,
            out,
            pass,
            unencrypted,
            force,
        } => generate(&name, &out, &pass, unencrypted, force).map_err(|e| e.to_string()),
    }
}

fn generate(
    name: &str,
    out: &Path,
    pass: &PassArgs,
    unencrypted: bool,
    force: bool,
) -> Result<(), KeyError> {
    airlock_formats::trust::validate_key_name(name).map_err(|_| KeyError::Name(name.to_owned()))?;
    let pk_path = out.join(format!("{name}.pub"));
    let sk_path = out.join(format!("{name}.key"));
    for p in [&pk_path, &sk_path] {
        if p.exists() && !force {
            return Err(KeyError::Exists(escape::path(p)));
        }
    }
    let (protection, passphrase) = if unencrypted {
        (Protection::Unencrypted, Zeroizing::new(String::new()))
    } else {
        (Protection::Scrypt, new_passphrase(pass)?)
    };
    let sk = SecretKey::generate().map_err(|source| KeyError::Key {
        path: escape::path(&sk_path),
        source,
    })?;
    let sk_text = Zeroizing::new(sk.to_file(protection, passphrase.as_bytes()).map_err(
        |source| KeyError::Key {
            path: escape::path(&sk_path),
            source,
        },
    )?);
    std::fs::create_dir_all(out).map_err(|source| KeyError::Write {
        path: escape::path(out),
        source,
    })?;
    write_file(&sk_path, sk_text.as_bytes(), 0o600)?;
    let pk = sk.public_key();
    write_file(&pk_path, pk.to_file().as_bytes(), 0o644)?;
    println!("public key {} (id {})", escape::path(&pk_path), pk.key_id);
    println!(
        "secret key {} ({})",
        escape::path(&sk_path),
        match protection {
            Protection::Scrypt => "passphrase-protected",
            Protection::Unencrypted => "UNENCRYPTED",
        }
    );
    println!("{}", pk.to_base64());
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| KeyError::Write {
        path: escape::path(path),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: escape::path(path),
        source,
    })?;
    if bytes.len() > airlock_formats::minisig::MAX_FILE_LEN {
        return Err(KeyError::Key {
            path: escape::path(path),
            source: MinisigError::TooLarge { what: "key file" },
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::Key {
        path: escape::path(path),
        source: MinisigError::NotText { what: "key file" },
    })
}

/// Loads a minisign public key file.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_text(path)?;
    PublicKey::parse(&text).map_err(|source| KeyError::Key {
        path: escape::path(path),
        source,
    })
}

/// Loads (and if needed decrypts) a minisign secret key file.
pub fn load_secret(path: &Path, pass: &PassArgs) -> Result<SecretKey, KeyError> {
    let text = Zeroizing::new(read_text(path)?);
    let key_err = |source| KeyError::Key {
        path: escape::path(path),
        source,
    };
    let mut pass_err = None;
    let r = SecretKey::parse(&text, || {
        match read_passphrase(pass, "Passphrase for secret key: ") {
            Ok(p) => Some(p),
            Err(e) => {
                pass_err = Some(e);
                None
            }
        }
    });
    match (r, pass_err) {
        (_, Some(e)) => Err(e),
        (r, None) => r.map_err(key_err),
    }
}

/// Default names: `dir/alice.pub` → `alice`.
pub fn stem(path: &Path) -> Option<String> {
    path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
}

fn read_passphrase(pass: &PassArgs, prompt: &str) -> Result<Zeroizing<String>, KeyError> {
    if let Some(f) = &pass.passphrase_file {
        let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|source| KeyError::Read {
            path: escape::path(f),
            source,
        })?);
        let line = text.lines().next().unwrap_or("");
        return Ok(Zeroizing::new(line.to_owned()));
    }
    if !std::io::stdin().is_terminal() && !tty_available() {
        return Err(KeyError::Passphrase(
            "no terminal to ask on; use --passphrase-file".into(),
        ));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Passphrase(e.to_string()))
}

fn tty_available() -> bool {
    std::fs::File::open("/dev/tty").is_ok()
}

fn new_passphrase(pass: &PassArgs) -> Result<Zeroizing<String>, KeyError> {
    let p = read_passphrase(pass, "New passphrase for the secret key: ")?;
    if pass.passphrase_file.is_none() {
        let again = read_passphrase(pass, "Repeat passphrase: ")?;
        if *again != *p {
            return Err(KeyError::Passphrase("the two passphrases differ".into()));
        }
    }
    if p.is_empty() {
        return Err(KeyError::Passphrase(
            "empty passphrase (use --unencrypted to mean it)".into(),
        ));
    }
    Ok(p)
}
