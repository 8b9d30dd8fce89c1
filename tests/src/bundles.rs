//! Signed bundles and stick images made on the host for the import tests:
//! the `airlock` CLI and `airlock-modelgen` of this build, the DEMO keys
//! (`scripts/demo-keys`: roles root, models, system; the demo image trusts
//! them) and `scripts/make-stick`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    manifest_dir().join("..")
}

/// This package's directory (`<repo>/tests`): cargo's `CARGO_MANIFEST_DIR`
/// at run time (`cargo test` sets it for the test binaries), else the one
/// this library was compiled in. Run time first: one cargo target dir serves
/// every checkout of the machine, and a library compiled from another
/// checkout keeps that checkout's path.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A release binary next to the running test's directory
/// (`target/<triple>/release/deps/..`).
pub fn release_bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .ok_or("no release directory above the test binary")?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("not built: {}", bin.display()))
    }
}

/// Runs `cmd`; its stdout, or its output as the error.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packs and signs bundles into one directory (a stick's top level).
pub struct Packer {
    airlock: PathBuf,
    keys: PathBuf,
    /// Where the bundles are written.
    pub dir: PathBuf,
}

/// Which DEMO key signs a bundle (`None`: unsigned).
#[derive(Clone, Copy, Debug)]
pub enum Signer {
    Models,
    System,
    Unsigned,
}

impl Packer {
    pub fn new(dir: &Path) -> Result<Self, String> {
        let keys = run(Command::new(repo_root().join("scripts/demo-keys")).arg("dir"))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Packer {
            airlock: release_bin("airlock")?,
            keys: PathBuf::from(keys.trim()),
            dir: dir.to_owned(),
        })
    }

    /// `airlock bundle pack --kind KIND --name NAME --version V EXTRA... -o
    /// DIR/NAME_V.airlock FILES...`, then signed by `signer`.
    pub fn pack(
        &self,
        kind: &str,
        name: &str,
        version: u64,
        extra: &[&str],
        files: &[&Path],
        signer: Signer,
    ) -> Result<PathBuf, String> {
        let bundle = self.dir.join(format!("{name}_{version}.airlock"));
        run(Command::new(&self.airlock)
            .args(["bundle", "pack", "--kind", kind, "--name", name])
            .args(["--version", &version.to_string()])
            .args(extra)
            .arg("-o")
            .arg(&bundle)
            .args(files))?;
        let key = match signer {
            Signer::Models => "demo-models.key",
            Signer::System => "demo-system.key",
            Signer::Unsigned => return Ok(bundle),
        };
        run(Command::new(&self.airlock)
            .args(["bundle", "sign"])
            .arg(&bundle)
            .arg("--key")
            .arg(self.keys.join(key)))?;
        Ok(bundle)
    }
}

/// A tiny generated GGUF (random weights) at `path`.
pub fn tiny_gguf(path: &Path, seed: u64) -> Result<(), String> {
    run(Command::new(release_bin("airlock-modelgen")?)
        .args(["--preset", "tiny", "--seed", &seed.to_string(), "--out"])
        .arg(path))
    .map(drop)
}

/// `scripts/make-stick --fs FS --label LABEL OUT PATHS...` (MBR + one
/// partition); `size_mib` forces the image size.
pub fn make_stick(
    out: &Path,
    fs: &str,
    label: &str,
    size_mib: Option<u64>,
    paths: &[PathBuf],
) -> Result<(), String> {
    let mut cmd = Command::new(repo_root().join("scripts/make-stick"));
    cmd.args(["--fs", fs, "--label", label]);
    if let Some(s) = size_mib {
        cmd.args(["--size", &s.to_string()]);
    }
    run(cmd.arg(out).args(paths)).map(drop)
}

/// Flips one byte (XOR 0xff) at `offset` of the file `path` inside the
/// ext4 partition named `partlabel` of the raw disk image `disk`, through
/// the file system's own block map (`debugfs bmap`), without mounting.
pub fn flip_byte_in_ext4_file(
    disk: &Path,
    partlabel: &str,
    path: &str,
    offset: u64,
) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let table = run(Command::new("sfdisk").arg("-J").arg(disk))?;
    let json: serde_json::Value =
        serde_json::from_str(&table).map_err(|e| format!("sfdisk -J: {e}"))?;
    let part = json["partitiontable"]["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == partlabel))
        .ok_or_else(|| format!("no partition named {partlabel} in {}", disk.display()))?;
    let start = part["start"].as_u64().ok_or("partition without start")? * 512;
    let spec = format!("{}?offset={start}", disk.display());
    let stats = run(Command::new("debugfs").args(["-R", "stats", &spec]))?;
    let block_size: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("debugfs stats: no block size")?;
    let bmap = run(Command::new("debugfs").args([
        "-R",
        &format!("bmap {path} {}", offset / block_size),
        &spec,
    ]))?;
    let block: u64 = bmap
        .trim()
        .parse()
        .map_err(|_| format!("debugfs bmap {path}: {bmap:?}"))?;
    if block == 0 {
        return Err(format!("debugfs bmap {path}: no block at offset {offset}"));
    }
    let at = start + block * block_size + offset % block_size;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(|e| format!("{}: {e}", disk.display()))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))
        .and_then(|_| f.read_exact(&mut b))
        .and_then(|()| f.seek(SeekFrom::Start(at)))
        .and_then(|_| f.write_all(&[b[0] ^ 0xff]))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("flip byte at {at} of {}: {e}", disk.display()))
}
