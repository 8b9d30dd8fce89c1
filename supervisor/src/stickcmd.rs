//! The console's stick commands: `usb` (the inserted sticks and what is
//! on them, each stick then held mounted read-only by this console) and
//! `eject [DEV]` (sync, unmount every mount Airlock made of it, say it can
//! be pulled). Neither is audited: `usb` only reads names, and `eject`
//! changes nothing on the appliance or the stick (whatever was written
//! was audited when it was written; the pull itself is PID 1's
//! `stick-removed` entry). A refused command (not logged in) is audited
//! as every refusal is.

use crate::console::Console;
use crate::stickhold;
use crate::sticklist;
use crate::usb::{self, Stick};
use airlock_formats::escape;
use std::path::Path;

/// The disk `eject` means: `want` (a disk, or one of its partitions),
/// else the only stick inserted or held. `present`: inserted now;
/// `held`: mounted by this console (a stick pulled without `eject` is
/// still held until it is ejected or the next `usb`).
pub fn eject_target(
    want: Option<&str>,
    present: &[String],
    held: &[String],
) -> Result<String, String> {
    let mut known: Vec<&String> = present.iter().chain(held.iter()).collect();
    known.sort();
    known.dedup();
    match want {
        Some(w) => {
            let part_of = |d: &String| {
                w.strip_prefix(d.as_str())
                    .is_some_and(|rest| stickhold::is_partition_suffix(d, rest))
            };
            known
                .iter()
                .find(|d| d.as_str() == w)
                .or_else(|| known.iter().find(|d| part_of(d)))
                .map(|d| d.to_string())
                .ok_or_else(|| {
                    format!(
                        "no inserted stick is called '{}'; see 'usb'",
                        crate::screen::line(w)
                    )
                })
        }
        None => match known.as_slice() {
            [] => Err("no USB stick is inserted".into()),
            [one] => Ok(one.to_string()),
            many => Err(format!(
                "{} sticks are inserted ({}); name one, e.g. 'eject {}'",
                many.len(),
                many.iter()
                    .map(|d| escape::text(d).into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                escape::text(many[0])
            )),
        },
    }
}

impl Console {
    fn present_sticks(&self) -> Vec<Stick> {
        usb::scan(Path::new("/sys/block"), &[]).unwrap_or_default()
    }

    /// `usb`: every inserted stick, its label and its top-level files.
    pub(crate) fn cmd_usb(&mut self) {
        let sticks = self.present_sticks();
        let names: Vec<String> = sticks.iter().map(|s| s.name.clone()).collect();
        self.sticks.prune(&names);
        if sticks.is_empty() {
            return self.out("no USB stick is inserted\n");
        }
        for mut s in sticks {
            let dev = crate::stickwrite::device_of(&s.name);
            s.label = crate::usb_label::read_head(&dev)
                .ok()
                .and_then(|b| crate::usb_label::parse_label(&b));
            let head = s.describe();
            let listing = match self.sticks.root(&s.name, &dev) {
                Ok(root) => sticklist::list(&root, &dev).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let text = match listing {
                Ok(l) => format!(
                    "{head} ({}, mounted read-only)\n{}",
                    escape::text(&dev),
                    sticklist::render(&l)
                ),
                Err(e) => format!("{head}: {}\n", crate::screen::line(&e)),
            };
            self.out(&text);
        }
        self.out("'eject STICK' before pulling a stick.\n");
    }

    /// `eject [DEV]`.
    pub(crate) fn cmd_eject(&mut self, want: Option<&str>) {
        let present: Vec<String> = self.present_sticks().into_iter().map(|s| s.name).collect();
        let disk = match eject_target(want, &present, &self.sticks.held()) {
            Ok(d) => d,
            Err(why) => return self.out(&format!("eject refused: {why}\n")),
        };
        if let Some(what) = stickhold::busy(&disk) {
            return self.out(&format!(
                "eject refused: {} is being written ({what}); wait for it to finish\n",
                escape::text(&disk)
            ));
        }
        let r = stickhold::unmount_ours(&disk);
        self.sticks.release(&disk);
        let shown = escape::text(&disk).into_owned();
        match r {
            Ok(_) => self.out(&format!("{shown} can be pulled now\n")),
            Err(e) => self.out(&format!(
                "eject refused: {}; do not pull {shown} yet\n",
                crate::screen::line(&e.to_string())
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eject_targets() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (want, present, held, result)
        type Case<'a> = (
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
            Result<&'a str, &'a str>,
        );
        let cases: &[Case] = &[
            (None, &["sdb"], &[], Ok("sdb")),
            (None, &[], &["sdb"], Ok("sdb")),
            (None, &["sdb"], &["sdb"], Ok("sdb")),
            (None, &[], &[], Err("no USB stick is inserted")),
            (
                None,
                &["sdb", "sdc"],
                &[],
                Err("2 sticks are inserted (sdb, sdc); name one, e.g. 'eject sdb'"),
            ),
            (Some("sdc"), &["sdb", "sdc"], &[], Ok("sdc")),
            (Some("sdb1"), &["sdb"], &[], Ok("sdb")),
            (Some("mmcblk0p1"), &["mmcblk0"], &[], Ok("mmcblk0")),
            (
                Some("sdbx"),
                &["sdb"],
                &[],
                Err("no inserted stick is called 'sdbx'; see 'usb'"),
            ),
            (
                Some("sdd"),
                &["sdb"],
                &[],
                Err("no inserted stick is called 'sdd'; see 'usb'"),
            ),
        ];
        for (want, present, held, result) in cases {
            let got = eject_target(*want, &v(present), &v(held));
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                *result,
                "{want:?} {present:?} {held:?}"
            );
        }
    }
}
