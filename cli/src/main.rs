//! `airlock`: the host CLI used on the connected machine by the security
//! team and update officers: keys, bundles, trust files.
//!
//! Every failure prints exactly one line `airlock: <reason>` on stderr and
//! exits 1 (usage errors exit 2, from clap).

mod audit_cmd;
mod bundle_cmd;
mod keys;
mod progress;
mod receipt_cmd;
mod report;
mod store_cmd;
mod trust_cmd;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Host tool for Airlock: minisign-compatible keys, signed model/system
/// bundles, trust files.
#[derive(Parser)]
#[command(name = "airlock", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Signing keys (minisign format: usable with `minisign -S` / `-V`).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Model and system bundles: pack, sign, verify, install.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Trust files: which keys may sign what, with thresholds.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Stores (host-side install targets): explicit creation and recovery.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Audit-log exports: verify, compare two exports, check a receipt,
    /// write an HTML report.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Generate a key pair: DIR/NAME.pub (public) and DIR/NAME.key (secret).
    ///
    /// The secret key is encrypted with a passphrase (scrypt, minisign's
    /// defaults) asked on the terminal, or read from --passphrase-file.
    /// --unencrypted writes it in clear (like `minisign -W`): only for keys
    /// kept on an encrypted, offline medium.
    Generate {
        /// Key name (names the files and, later, the signature files).
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[command(flatten)]
        pass: PassArgs,
        /// Store the secret key unencrypted.
        #[arg(long, conflicts_with = "passphrase_file")]
        unencrypted: bool,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
}

/// `--split SIZE` (see [`airlock_formats::pack::parse_size`]).
fn parse_split(arg: &str) -> Result<u64, String> {
    airlock_formats::pack::parse_size(arg).map_err(|e| e.to_string())
}

#[derive(Args, Clone, Default)]
pub struct PassArgs {
    /// Read the secret key passphrase from the first line of this file
    /// instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum BundleCmd {
    /// Create an unsigned bundle directory from payload files.
    ///
    /// FILE is a path (payload named after its file name) or
    /// PATH_IN_BUNDLE=PATH. Output is the bundle directory to create,
    /// conventionally NAME_VERSION.airlock. For a model, the architecture,
    /// context length and chat template not given here are read from the
    /// GGUF file's own metadata. With --split, a file larger than SIZE is
    /// written as parts (FILE.part000, FILE.part001, …) that fit a FAT32
    /// stick; the import joins them and checks each part and the whole.
    /// A system bundle (named airlock) carries the UKI: --from-build DIR
    /// takes it, its version and variant and the trust file's SHA-256 from
    /// a scripts/build-image output directory; otherwise give FILE,
    /// --version, --variant and --trust.
    // `--version` here is the bundle's version, not the program's.
    #[command(disable_version_flag = true)]
    Pack(Box<PackArgs>),
    /// Sign a bundle's manifest: writes manifest.json.SIGNER.minisig.
    ///
    /// First checks the layout and listing and hashes every payload
    /// against the manifest (refusing on any difference), and prints what
    /// is signed: kind, name, version, every file with size and SHA-256.
    Sign {
        dir: PathBuf,
        /// minisign secret key file (from `airlock key generate` or `minisign -G`).
        #[arg(long)]
        key: PathBuf,
        /// Signer name for the signature file (default: key file name without extension).
        #[arg(long)]
        signer: Option<String>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Verify a bundle completely (signatures, listing, every payload hash,
    /// and with --state the anti-rollback rule). Payloads are hashed even
    /// when signatures are missing. Prints a summary; exits 0 when the
    /// bundle is acceptable, else prints one reason line and exits 1.
    Verify {
        dir: PathBuf,
        #[arg(long)]
        trust: PathBuf,
        /// Store directory whose state.json holds installed versions.
        #[arg(long, value_name = "STATE_DIR")]
        state: Option<PathBuf>,
        /// Co-signer mode: exit 0 when everything but the signature
        /// threshold checks out (the summary says how many are missing).
        #[arg(long)]
        allow_missing_signatures: bool,
    },
    /// Verify and import a bundle into a store (the appliance's import
    /// code). The store must exist (`airlock store init`).
    Install {
        dir: PathBuf,
        #[arg(long)]
        trust: PathBuf,
        #[arg(long)]
        store: PathBuf,
    },
}

/// Options of `airlock bundle pack` (boxed: the largest subcommand).
#[derive(Args)]
pub struct PackArgs {
    /// What the bundle carries: model or system.
    #[arg(long)]
    kind: airlock_formats::manifest::Kind,
    /// Bundle name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit
    /// (it names the directory in the store).
    #[arg(long)]
    name: String,
    /// Version (at least 1); an import of a lower version than installed is
    /// refused. A system bundle from a build directory takes the UKI's
    /// AIRLOCK_SYSTEM_VERSION (a version given must equal it).
    #[arg(long, required_unless_present = "from_build")]
    version: Option<u64>,
    /// Free text shown at verification and import (at most 4096 bytes).
    #[arg(long, default_value = "")]
    description: String,
    /// Creation time (RFC 3339 UTC); default now, or SOURCE_DATE_EPOCH.
    #[arg(long)]
    created: Option<String>,
    /// model: payload path of the GGUF file (default: the only *.gguf).
    #[arg(long)]
    gguf: Option<String>,
    /// model: architecture, e.g. llama (default: the GGUF's general.architecture).
    #[arg(long)]
    architecture: Option<String>,
    /// model: context length in tokens (default: the GGUF's ARCH.context_length).
    #[arg(long)]
    context_length: Option<u64>,
    /// model: payload path of a chat template file (default: the GGUF's
    /// tokenizer.chat_template, written as chat_template.jinja, if it has one).
    #[arg(long)]
    chat_template: Option<String>,
    /// system: payload path of the UKI (default: the only *.efi).
    #[arg(long)]
    uki: Option<String>,
    /// system: the image variant the UKI was built as (its VARIANT_ID:
    /// demo, production); from a build directory, a variant given must
    /// equal the UKI's.
    #[arg(long, value_name = "V")]
    variant: Option<String>,
    /// system: the trust file built into the UKI (its SHA-256 goes into
    /// the manifest); from a build directory, a file given must be the
    /// same as DIR/trust.json.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// system: a scripts/build-image output directory: the payload is
    /// DIR/airlock.efi; version and variant come from its .osrel
    /// (AIRLOCK_SYSTEM_VERSION, VARIANT_ID), trust_sha256 from
    /// DIR/trust.json.
    #[arg(long, value_name = "DIR")]
    from_build: Option<PathBuf>,
    /// Write files larger than SIZE as parts of at most SIZE bytes: bytes,
    /// or K/M/G (KiB, MiB, GiB) or KB/MB/GB (decimal); at most 4 GiB - 1
    /// (FAT32's limit), e.g. 4095M or 4GB. Default: never split.
    #[arg(long, value_name = "SIZE", value_parser = parse_split)]
    split: Option<u64>,
    /// Bundle directory to create.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Payload files: PATH (named after its file name) or PATH_IN_BUNDLE=PATH;
    /// none for a system bundle from a build directory.
    #[arg(required_unless_present = "from_build", value_name = "FILE")]
    files: Vec<String>,
}

#[derive(Subcommand)]
pub enum TrustCmd {
    /// Create a version-1 trust file holding root keys.
    Init {
        /// Root public key file (minisign format); NAME=FILE to name it
        /// (default name: file name without extension). Repeat for more.
        #[arg(long = "root-key", required = true, value_name = "PUB")]
        root_keys: Vec<String>,
        #[arg(long, default_value_t = 1)]
        root_threshold: u32,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Add a key with a role (or add the role to a key already present).
    /// Removes now-stale signatures of the trust file.
    AddKey {
        file: PathBuf,
        #[arg(long)]
        role: airlock_formats::trust::Role,
        /// Public key file (minisign format).
        #[arg(long)]
        key: PathBuf,
        /// Key name (default: file name without extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Set the m-of-n threshold of a role. Removes stale signatures.
    SetThreshold {
        file: PathBuf,
        #[arg(long)]
        role: airlock_formats::trust::Role,
        threshold: u32,
    },
    /// Raise the version by one (start of a rotation). Removes stale signatures.
    Bump { file: PathBuf },
    /// Sign a trust file: writes FILE.SIGNER.minisig next to it.
    Sign {
        file: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        signer: Option<String>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Check a trust file; with --previous, check it as a rotation of the
    /// previous one (version +1, signed by both root thresholds).
    Verify {
        file: PathBuf,
        #[arg(long)]
        previous: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Create a new, empty store (directory absent or empty) with an empty
    /// anti-rollback state.
    Init { store: PathBuf },
    /// Rebuild the anti-rollback state of a store that lost its state.json,
    /// from the installed versions that fully verify against the trust
    /// file (highest per name). Deletes nothing; prints what it recorded
    /// and skipped.
    Recover {
        store: PathBuf,
        #[arg(long)]
        trust: PathBuf,
    },
    /// List the installed models (custody view for the security team):
    /// versions, size, signers, imported when and by whom, active, kept.
    Models { store: PathBuf },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Key(c) => keys::run(c),
        Cmd::Bundle(c) => bundle_cmd::run(c),
        Cmd::Trust(c) => trust_cmd::run(c),
        Cmd::Store(c) => store_cmd::run(c),
        Cmd::Audit(c) => audit_cmd::run(c),
    };
    if let Err(e) = r {
        // Exactly one line, and nothing that drives the terminal: names are
        // escaped where the message is built; this is the safety net.
        let line = airlock_formats::escape::multiline(&e).replace(['\n', '\t'], " ");
        eprintln!("airlock: {line}");
        std::process::exit(1);
    }
}
