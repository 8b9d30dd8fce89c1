//! Writes a deterministic random-weight llama GGUF for tests and benchmarks.
//!
//! `airlock-modelgen --preset tiny|bench|1b [--quant q8_0|q4_k|f32] [--seed N] --out FILE`

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_worker::modelgen::{parameter_count, write_model, Preset, Quant};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "airlock-modelgen",
    about = "Generate a random-weight llama GGUF"
)]
struct Args {
    /// Model shape.
    #[arg(long, value_enum)]
    preset: Preset,
    /// Storage type of the weight matrices.
    #[arg(long, value_enum, default_value = "q8_0")]
    quant: Quant,
    /// Seed of the weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (written via a temporary file and renamed).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shape = args.preset.shape();
    let tmp = args.out.with_extension("gguf.tmp");
    let result = (|| -> Result<(), String> {
        let f =
            std::fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let mut w = BufWriter::new(f);
        let name = format!("airlock-test-{}", args.preset.name());
        write_model(&mut w, &name, shape, args.quant, args.seed).map_err(|e| e.to_string())?;
        let f = w
            .into_inner()
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        f.sync_all()
            .map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &args.out)
            .map_err(|e| format!("renaming to {}: {e}", args.out.display()))
    })();
    match result {
        Ok(()) => {
            println!(
                "{}: {} {:?}, {} parameters, seed {}",
                args.out.display(),
                args.preset.name(),
                args.quant,
                parameter_count(shape),
                args.seed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("airlock-modelgen: {e}");
            ExitCode::FAILURE
        }
    }
}
