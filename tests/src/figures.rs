//! Printed figures of the end-to-end suite (issue 4, "Done when").
//!
//! Figures are measurements, never assertions. They are written where a
//! passing test's output survives cargo's capture: straight to the
//! process's stderr file descriptor (libtest captures only the print
//! macros), and appended to `e2e-figures.txt` next to the image artefacts
//! so scripts can show them again.

use std::io::Write;
use std::path::Path;

/// Prefix of every figure line, for grepping in CI logs.
pub const PREFIX: &str = "FIGURE:";

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub value: String,
    pub note: String,
}

impl Figure {
    /// The printed line, e.g. `FIGURE: uki size = 12.3 MiB (12902400 bytes)`.
    pub fn line(&self) -> String {
        if self.note.is_empty() {
            format!("{PREFIX} {} = {}", self.name, self.value)
        } else {
            format!("{PREFIX} {} = {} ({})", self.name, self.value, self.note)
        }
    }
}

/// `bytes` as MiB with the exact count.
pub fn size_figure(name: &'static str, bytes: u64) -> Figure {
    Figure {
        name,
        value: format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0)),
        note: format!("{bytes} bytes"),
    }
}

/// Prints the figures to the real stderr and, if given, writes them to `file`.
pub fn publish(figures: &[Figure], file: Option<&Path>) -> std::io::Result<()> {
    let text: String = figures.iter().map(|f| f.line() + "\n").collect();
    // Uncaptured on purpose: visible even when the test passes.
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())?;
    err.flush()?;
    if let Some(file) = file {
        std::fs::write(file, &text)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_have_prefix_value_and_note() {
        let f = size_figure("uki size", 3 * 1024 * 1024 + 512 * 1024);
        assert_eq!(f.line(), "FIGURE: uki size = 3.50 MiB (3670016 bytes)");
        let g = Figure {
            name: "x",
            value: "1 s".into(),
            note: String::new(),
        };
        assert_eq!(g.line(), "FIGURE: x = 1 s");
    }
}
