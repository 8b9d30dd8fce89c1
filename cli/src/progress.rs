//! Progress bar on stderr for long hashing and copies, only when stderr is
//! a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Below this many bytes no bar is drawn.
const MIN_BYTES: u64 = 16 << 20;

/// An optional indicatif bar.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(total: u64, what: &str) -> Self {
        if total < MIN_BYTES || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let pb = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(what.to_owned());
        Self(Some(pb))
    }

    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }

    pub fn done(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// Adapter for the import's progress trait.
pub struct ImportBar(pub Option<Bar>);

impl airlock_formats::import::Progress for ImportBar {
    fn start(&mut self, total: u64) {
        self.0 = Some(Bar::new(total, "import"));
    }
    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = &self.0 {
            b.done();
        }
    }
}
