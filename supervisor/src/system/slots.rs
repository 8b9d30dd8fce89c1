//! The two boot slots on the ESP, as systemd-boot sees them: one UKI per
//! slot in `EFI/Linux/`, named with the Boot Loader Specification's boot
//! counter (`airlock-b+3.efi`: 3 tries left; `airlock-b+2-1.efi`: 2 left,
//! 1 used; `airlock-b+0-3.efi`: bad; `airlock-b.efi`: blessed, never
//! counted again). Pure: names, states and the order systemd-boot boots
//! them in; the file operations are in `esp`.

use std::cmp::Ordering;

/// File name prefix of every slot's UKI.
pub const PREFIX: &str = "airlock-";
/// Tries a freshly installed slot gets (systemd's default as well).
pub const TRIES: u32 = 3;

/// A boot slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot an update goes into when `self` is running.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The name a UKI is written under before it is renamed into place:
    /// not `*.efi`, so systemd-boot never sees a half-written file.
    pub fn temp_name(self) -> String {
        format!(".{PREFIX}{}.new", self.as_str())
    }
}

/// Where a slot's entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Blessed: booted and passed its health check (no counter).
    Good,
    /// Being tried: `left` tries left, `done` used.
    Trying { left: u32, done: u32 },
    /// All tries used (or marked bad by a failed health check).
    Bad { done: u32 },
}

/// A slot entry's file name, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    pub slot: Slot,
    /// Tries left; `None` without a counter (blessed).
    pub left: Option<u32>,
    /// Tries used; `None` when the name has no `-D` part.
    pub done: Option<u32>,
}

impl EntryName {
    /// A freshly installed entry: `tries` left, none used (`airlock-b+3.efi`).
    pub fn fresh(slot: Slot, tries: u32) -> Self {
        EntryName {
            slot,
            left: Some(tries),
            done: None,
        }
    }

    /// Parses `airlock-{a,b}[+LEFT[-DONE]].efi` (the suffix in any case, as
    /// FAT keeps it); `None` for any other name.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?;
        let stem = strip_suffix_ci(rest, ".efi")?;
        let mut chars = stem.chars();
        let slot = Slot::parse(&chars.next()?.to_string())?;
        let counter = chars.as_str();
        if counter.is_empty() {
            return Some(EntryName {
                slot,
                left: None,
                done: None,
            });
        }
        let counter = counter.strip_prefix('+')?;
        let (left, done) = match counter.split_once('-') {
            Some((l, d)) => (number(l)?, Some(number(d)?)),
            None => (number(counter)?, None),
        };
        Some(EntryName {
            slot,
            left: Some(left),
            done,
        })
    }

    /// The file name.
    pub fn file_name(&self) -> String {
        let mut s = format!("{PREFIX}{}", self.slot.as_str());
        if let Some(l) = self.left {
            s.push_str(&format!("+{l}"));
            if let Some(d) = self.done {
                s.push_str(&format!("-{d}"));
            }
        }
        s.push_str(".efi");
        s
    }

    pub fn life(&self) -> Life {
        match self.left {
            None => Life::Good,
            Some(0) => Life::Bad {
                done: self.done.unwrap_or(0),
            },
            Some(left) => Life::Trying {
                left,
                done: self.done.unwrap_or(0),
            },
        }
    }

    /// The blessed name (the counter removed).
    pub fn blessed(&self) -> Self {
        EntryName {
            slot: self.slot,
            left: None,
            done: None,
        }
    }

    /// The name that marks the entry bad at once (no tries left, the used
    /// ones kept), as `systemd-bless-boot bad` does.
    pub fn marked_bad(&self) -> Self {
        EntryName {
            slot: self.slot,
            left: Some(0),
            done: Some(self.done.unwrap_or(0)),
        }
    }
}

/// The slot of systemd-boot's `LoaderEntrySelected` (the entry id: its file
/// name, with or without the counter, possibly lower-cased).
pub fn slot_of_entry_id(id: &str) -> Option<Slot> {
    let lower = id.to_ascii_lowercase();
    let rest = lower.strip_prefix(PREFIX)?;
    let mut chars = rest.chars();
    let slot = Slot::parse(&chars.next()?.to_string())?;
    match chars.next() {
        None | Some('+') | Some('.') => Some(slot),
        _ => None,
    }
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// One slot entry with the system version its UKI carries (`None` when
/// its `.osrel` could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub name: EntryName,
    pub version: Option<u64>,
}

/// The order systemd-boot offers the entries in, the default first: bad
/// entries last, then the higher `IMAGE_VERSION` first, then the file name
/// (newer first), then more tries left first.
pub fn boot_order(entries: &[Known]) -> Vec<Known> {
    let mut v = entries.to_vec();
    v.sort_by(compare);
    v
}

fn compare(x: &Known, y: &Known) -> Ordering {
    let bad = |k: &Known| matches!(k.name.life(), Life::Bad { .. });
    bad(x)
        .cmp(&bad(y))
        .then_with(|| y.version.cmp(&x.version))
        .then_with(|| y.name.slot.cmp(&x.name.slot))
        .then_with(|| y.name.left.cmp(&x.name.left))
}

/// What the next boot will try: the first of [`boot_order`].
pub fn next_boot(entries: &[Known]) -> Option<Known> {
    boot_order(entries).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        type Want = Option<(Slot, Option<u32>, Option<u32>, Life)>;
        let table: &[(&str, Want)] = &[
            ("airlock-a.efi", Some((Slot::A, None, None, Life::Good))),
            (
                "airlock-b+3.efi",
                Some((Slot::B, Some(3), None, Life::Trying { left: 3, done: 0 })),
            ),
            (
                "airlock-b+2-1.efi",
                Some((Slot::B, Some(2), Some(1), Life::Trying { left: 2, done: 1 })),
            ),
            (
                "airlock-a+0-3.efi",
                Some((Slot::A, Some(0), Some(3), Life::Bad { done: 3 })),
            ),
            (
                "airlock-a+0.efi",
                Some((Slot::A, Some(0), None, Life::Bad { done: 0 })),
            ),
            ("airlock-c.efi", None),
            ("airlock-a+.efi", None),
            ("airlock-a+x.efi", None),
            ("airlock-a+1-.efi", None),
            ("airlock-ab.efi", None),
            ("airlock-a+99999.efi", None),
            ("airlock-a.efi.tmp", None),
            (".airlock-a.new", None),
            ("other.efi", None),
            ("airlock-a", None),
        ];
        for (name, want) in table {
            let got = EntryName::parse(name);
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some((slot, left, done, life)) => {
                    let g = got.expect("parses");
                    assert_eq!(
                        (g.slot, g.left, g.done, g.life()),
                        (*slot, *left, *done, *life)
                    );
                    assert_eq!(g.file_name(), *name, "round trip");
                }
            }
        }
        // FAT may hand back another case of the suffix.
        assert_eq!(
            EntryName::parse("airlock-a+1-2.EFI").map(|e| e.file_name()),
            Some("airlock-a+1-2.efi".into())
        );
    }

    #[test]
    fn bless_and_mark_bad() {
        let e = EntryName::parse("airlock-b+2-1.efi").unwrap();
        assert_eq!(e.blessed().file_name(), "airlock-b.efi");
        assert_eq!(e.marked_bad().file_name(), "airlock-b+0-1.efi");
        let fresh = EntryName::fresh(Slot::B, TRIES);
        assert_eq!(fresh.file_name(), "airlock-b+3.efi");
        assert_eq!(fresh.marked_bad().file_name(), "airlock-b+0-0.efi");
        assert_eq!(Slot::A.temp_name(), ".airlock-a.new");
        assert_eq!(Slot::A.other(), Slot::B);
    }

    #[test]
    fn entry_ids_name_the_slot() {
        let table = [
            ("airlock-b+2-1.efi", Some(Slot::B)),
            ("airlock-b.efi", Some(Slot::B)),
            ("AIRLOCK-A.EFI", Some(Slot::A)),
            ("airlock-a", Some(Slot::A)),
            ("airlock-ab.efi", None),
            ("auto-reboot-to-firmware-setup", None),
            ("", None),
        ];
        for (id, want) in table {
            assert_eq!(slot_of_entry_id(id), want, "{id}");
        }
    }

    fn k(name: &str, version: u64) -> Known {
        Known {
            name: EntryName::parse(name).unwrap(),
            version: Some(version),
        }
    }

    #[test]
    fn boot_order_follows_systemd_boot() {
        // (entries, the slot booted next)
        let table: &[(&[Known], Slot)] = &[
            // A new version being tried comes first.
            (&[k("airlock-a.efi", 1), k("airlock-b+3.efi", 2)], Slot::B),
            (&[k("airlock-a.efi", 1), k("airlock-b+1-2.efi", 2)], Slot::B),
            // Its tries used up: the old one.
            (&[k("airlock-a.efi", 1), k("airlock-b+0-3.efi", 2)], Slot::A),
            // Both good: the higher version.
            (&[k("airlock-a.efi", 3), k("airlock-b.efi", 2)], Slot::A),
            // The second update goes into slot A.
            (&[k("airlock-a+3.efi", 3), k("airlock-b.efi", 2)], Slot::A),
            // Only a bad one: it is still booted.
            (&[k("airlock-b+0-3.efi", 2)], Slot::B),
        ];
        for (entries, want) in table {
            assert_eq!(
                next_boot(entries).map(|e| e.name.slot),
                Some(*want),
                "{entries:?}"
            );
        }
        assert_eq!(next_boot(&[]), None);
    }
}
