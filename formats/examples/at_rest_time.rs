//! Times the whole at-rest check (`at_rest::verify_at_rest`: bundle
//! layout, signatures against the trust file, manifest record, re-hash of
//! every payload) of one model version with a payload of SIZE bytes
//! (docs/bundles.md, "At-rest check"):
//! `cargo run --release -p airlock-formats --example at_rest_time DIR [SIZE]`.
//! The first run packs, signs and imports a model of pseudo-random bytes
//! into DIR/store (DIR must be empty or absent); later runs only time the
//! check. Drop the page cache between runs for the uncached figure
//! (`echo 3 > /proc/sys/vm/drop_caches`). The model is active, so the boot
//! child can be timed on the same store: `airlock-init model-check
//! DIR/store --trust DIR/trust.json --record /tmp/record`.

use airlock_formats::at_rest;
use airlock_formats::import::{self, Commit, Importer};
use airlock_formats::manifest::MANIFEST_FILE;
use airlock_formats::minisig::SecretKey;
use airlock_formats::pack::{self, Input, PackSpec, Section};
use airlock_formats::store;
use airlock_formats::trust::{Role, TrustFile};
use std::io::Write;
use std::path::Path;

fn e(what: &str) -> impl Fn(String) -> String + '_ {
    move |x| format!("{what}: {x}")
}

fn build(dir: &Path, size: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|x| e("create dir")(x.to_string()))?;
    let root = SecretKey::generate().map_err(|x| e("key")(x.to_string()))?;
    let models = SecretKey::generate().map_err(|x| e("key")(x.to_string()))?;
    let mut trust = TrustFile::new(vec![("root".into(), root.public_key())], 1)
        .map_err(|x| e("trust")(x.to_string()))?;
    trust
        .add_key("bench", &models.public_key(), Role::Models)
        .map_err(|x| e("trust")(x.to_string()))?;
    let tb = trust.to_bytes().map_err(|x| e("trust")(x.to_string()))?;
    std::fs::write(dir.join("trust.json"), tb).map_err(|x| e("write trust")(x.to_string()))?;
    // xorshift64*: incompressible enough, fast to write.
    let src = dir.join("big.gguf");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&src).map_err(|x| e("create payload")(x.to_string()))?,
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        f.write_all(&buf[..n])
            .map_err(|x| e("write payload")(x.to_string()))?;
        left -= n as u64;
    }
    f.flush().map_err(|x| e("write payload")(x.to_string()))?;
    drop(f);
    let out = dir.join("big_1.airlock");
    let spec = PackSpec {
        name: "big".into(),
        version: 1,
        description: String::new(),
        created: Some("2026-11-22T00:00:00Z".into()),
        inputs: vec![Input {
            path: "model.gguf".into(),
            source: src.clone(),
        }],
        section: Section::Model {
            gguf: None,
            architecture: Some("llama".into()),
            context_length: Some(256),
            chat_template: None,
        },
        split: None,
    };
    pack::pack(&spec, &out, &mut |_| {}).map_err(|x| e("pack")(x.to_string()))?;
    let m =
        std::fs::read(out.join(MANIFEST_FILE)).map_err(|x| e("read manifest")(x.to_string()))?;
    pack::write_signature(&out, MANIFEST_FILE, "bench", &models, &m, "bench")
        .map_err(|x| e("sign")(x.to_string()))?;
    let st = dir.join("store");
    store::init(&st).map_err(|x| e("init store")(x.to_string()))?;
    import::import_by(
        &out,
        &st,
        &trust,
        Commit::Now,
        &Importer::now("bench"),
        &mut import::NoProgress,
    )
    .map_err(|x| e("import")(x.to_string()))?;
    // Active, so that `airlock-init model-check DIR/store --trust
    // DIR/trust.json --record R` checks it too.
    airlock_formats::custody::activate(&st, &trust, "big", 1)
        .map_err(|x| e("activate")(x.to_string()))?;
    // Only the store's copy is needed from here on.
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&src);
    Ok(())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: at_rest_time DIR [SIZE]")?;
    let dir = Path::new(&dir);
    let size: u64 = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("SIZE {s:?} is not a number"))?,
        None => 2 << 30,
    };
    if !dir.join("store").is_dir() {
        let t = std::time::Instant::now();
        build(dir, size)?;
        println!(
            "built {} in {:.1} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let tb = std::fs::read(dir.join("trust.json")).map_err(|x| e("read trust")(x.to_string()))?;
    let trust = TrustFile::parse(&tb).map_err(|x| e("trust")(x.to_string()))?;
    let mut bytes = 0u64;
    let t = std::time::Instant::now();
    at_rest::verify_at_rest(&dir.join("store"), &trust, "big", 1, &mut |n| bytes += n)
        .map_err(|x| x.to_string())?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "verify_at_rest big v1: {bytes} bytes in {s:.2} s = {:.0} MB/s",
        bytes as f64 / s / 1e6
    );
    Ok(())
}
