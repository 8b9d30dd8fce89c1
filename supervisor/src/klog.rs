//! Logger for the `log` crate: lines go to /dev/kmsg (so they reach the
//! kernel log and, at warning level and above, the consoles), or to stderr
//! until /dev is mounted and when kmsg cannot be opened.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

struct Kmsg {
    file: Mutex<Option<File>>,
}

static LOGGER: Kmsg = Kmsg {
    file: Mutex::new(None),
};

/// Installs the logger (idempotent). `tag` prefixes every line.
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Opens /dev/kmsg once /dev is mounted; until then lines go to stderr.
pub fn attach_kmsg() {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        if let Ok(mut g) = LOGGER.file.lock() {
            *g = Some(f);
        }
    }
}

fn prio(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl log::Log for Kmsg {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let pid = std::process::id();
        // Kernel messages of warning level and above are printed on the
        // consoles raw: the same last check as every other console line.
        let text = record.args().to_string();
        let line = format!("airlock-init[{pid}]: {}\n", crate::screen::line(&text));
        let mut done = false;
        if let Ok(mut g) = self.file.lock() {
            if let Some(f) = g.as_mut() {
                // One write = one kmsg record.
                let rec = format!("<{}>{line}", prio(record.level()));
                done = f.write_all(rec.as_bytes()).is_ok();
            }
        }
        if !done {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}
