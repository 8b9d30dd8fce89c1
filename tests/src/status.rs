//! Parsing the supervisor's `status` output (`key: value` lines).

/// The `key: value` lines of a `status` reply, in order.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub entries: Vec<(String, String)>,
}

/// A `status` field that is missing or not in the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status has no {key:?} line; it printed:\n{text}")]
    Missing { key: String, text: String },
    #[error("status field {key:?} = {value:?} is not {expected}")]
    Shape {
        key: String,
        value: String,
        expected: &'static str,
    },
}

impl Status {
    /// Parses every `key: value` line; other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|l| {
                l.split_once(": ")
                    .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
            })
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(k, _)| !k.is_empty() && !k.starts_with('['))
            .collect();
        Status { entries }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or an error quoting the whole status.
    pub fn require(&self, key: &str) -> Result<&str, StatusError> {
        self.get(key).ok_or_else(|| StatusError::Missing {
            key: key.to_owned(),
            text: self
                .entries
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect(),
        })
    }

    /// Leading number of a value such as `0.912 s` or `1234 KiB`.
    pub fn number(&self, key: &str) -> Result<f64, StatusError> {
        let value = self.require(key)?;
        value
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| StatusError::Shape {
                key: key.to_owned(),
                value: value.to_owned(),
                expected: "a number followed by a unit",
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Airlock 0.1.0\nversion: 0.1.0\nslot: a\ninterfaces: lo\ninet sockets: refused (EAFNOSUPPORT)\nconsole ready after: 0.912 s\nsupervisor rss: 1880 KiB\n[usb] stick inserted: sdb (16 MiB)\nusb sticks: none\nready: yes\n";

    #[test]
    fn parses_fields_and_numbers() {
        let s = Status::parse(SAMPLE);
        assert_eq!(s.get("interfaces"), Some("lo"));
        assert_eq!(s.get("slot"), Some("a"));
        assert_eq!(s.get("ready"), Some("yes"));
        assert_eq!(s.number("console ready after").unwrap(), 0.912);
        assert_eq!(s.number("supervisor rss").unwrap(), 1880.0);
        assert!(s.get("[usb] stick inserted").is_none());
    }

    #[test]
    fn missing_and_malformed_fields_are_reported() {
        let s = Status::parse(SAMPLE);
        let err = s.require("uptime").unwrap_err().to_string();
        assert!(
            err.contains("no \"uptime\" line") && err.contains("slot: a"),
            "{err}"
        );
        let err = s.number("slot").unwrap_err().to_string();
        assert!(err.contains("is not a number"), "{err}");
    }
}
