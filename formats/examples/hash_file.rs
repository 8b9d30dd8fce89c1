//! Times the at-rest hash of one file with the same read+hash pipeline the
//! import and `at_rest::verify_at_rest` use (docs/bundles.md, "At-rest
//! check"): `cargo run --release -p airlock-formats --example hash_file FILE`.

use airlock_formats::{manifest, stream};

fn main() -> Result<(), String> {
    let path = std::env::args().nth(1).ok_or("usage: hash_file FILE")?;
    let mut f = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let t = std::time::Instant::now();
    let d = stream::stream(&mut f, len, None, &mut |_| {}).map_err(|e| e.to_string())?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}  {path}: {len} bytes in {s:.2} s = {:.0} MB/s",
        manifest::hex(&d),
        len as f64 / s / 1e6
    );
    Ok(())
}
