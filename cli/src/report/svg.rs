//! The inline SVG bar chart of entries per day: one stacked bar per day
//! that has entries (ok below, refused or failed on top), a tooltip
//! (`<title>`) per bar, date labels under the bars. Only numbers and
//! escaped text go into the markup; nothing is referenced or fetched.

use super::html::{escape, Html};
use std::fmt::Write as _;

/// One bar.
pub struct Bar {
    /// Shown under the bar and in its tooltip (escaped here).
    pub label: String,
    pub ok: u64,
    /// Refused or failed entries of the day.
    pub bad: u64,
}

/// Chart geometry, in SVG user units.
const PLOT_H: u64 = 160;
const TOP: u64 = 16;
const LEFT: u64 = 44;
const BOTTOM: u64 = 56;
/// Widest plot; more days get narrower bars.
const MAX_PLOT_W: u64 = 1080;
const MAX_STEP: u64 = 32;
/// At most this many date labels (every k-th day is labelled).
const MAX_LABELS: u64 = 36;

/// The chart, or nothing when there are no bars.
pub fn bar_chart(bars: &[Bar], caption: &str) -> Html {
    let n = bars.len() as u64;
    if n == 0 {
        return Html::default();
    }
    let step = (MAX_PLOT_W / n).clamp(2, MAX_STEP);
    let bar_w = (step * 3 / 4).max(1);
    let plot_w = step * n;
    let (w, h) = (LEFT + plot_w + 8, TOP + PLOT_H + BOTTOM);
    let max = bars.iter().map(|b| b.ok + b.bad).max().unwrap_or(0).max(1);
    let y = |v: u64| TOP + PLOT_H - v * PLOT_H / max;
    let every = n.div_ceil(MAX_LABELS).max(1);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        escape(caption)
    );
    // Axis and grid lines at 0, half and the maximum.
    for v in [0, max / 2, max] {
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy}\" x2=\"{}\" y2=\"{yy}\"></line><text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{v}</text>",
            LEFT + plot_w,
            LEFT - 6,
            yy + 4
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let i = i as u64;
        let x = LEFT + i * step + (step - bar_w) / 2;
        let label = escape(&b.label);
        let _ = write!(
            s,
            "<g><title>{label}: {} entries, {} refused or failed</title>",
            b.ok + b.bad,
            b.bad
        );
        let (y_ok, y_all) = (y(b.ok), y(b.ok + b.bad));
        if b.ok > 0 {
            let _ = write!(
                s,
                "<rect class=\"bar-ok\" x=\"{x}\" y=\"{y_ok}\" width=\"{bar_w}\" height=\"{}\"></rect>",
                TOP + PLOT_H - y_ok
            );
        }
        if b.bad > 0 {
            let _ = write!(
                s,
                "<rect class=\"bar-bad\" x=\"{x}\" y=\"{y_all}\" width=\"{bar_w}\" height=\"{}\"></rect>",
                y_ok - y_all
            );
        }
        s.push_str("</g>\n");
        if i.is_multiple_of(every) {
            let (lx, ly) = (x + bar_w / 2, TOP + PLOT_H + 12);
            let _ = writeln!(
                s,
                "<text class=\"axis\" x=\"{lx}\" y=\"{ly}\" text-anchor=\"end\" transform=\"rotate(-40 {lx} {ly})\">{label}</text>"
            );
        }
    }
    s.push_str("</svg>\n");
    Html::trusted(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_stacked_and_labels_escaped() {
        let bars = [
            Bar {
                label: "2026-12-03".into(),
                ok: 3,
                bad: 1,
            },
            Bar {
                label: "<x>".into(),
                ok: 0,
                bad: 2,
            },
        ];
        let s = bar_chart(&bars, "entries per day").into_string();
        assert_eq!(s.matches("<rect class=\"bar-ok\"").count(), 1, "{s}");
        assert_eq!(s.matches("<rect class=\"bar-bad\"").count(), 2, "{s}");
        assert!(s.contains("<title>2026-12-03: 4 entries, 1 refused or failed</title>"));
        assert!(s.contains("&lt;x&gt;") && !s.contains("<x>"), "{s}");
        // The tallest bar (4) reaches the top of the plot.
        assert!(s.contains(&format!("y=\"{TOP}\"")), "{s}");
        assert!(bar_chart(&[], "none").is_empty());
    }

    #[test]
    fn many_days_fit_and_few_are_labelled() {
        let bars: Vec<Bar> = (0..1000)
            .map(|i| Bar {
                label: format!("d{i}"),
                ok: i % 7,
                bad: 0,
            })
            .collect();
        let s = bar_chart(&bars, "x").into_string();
        let labels = s.matches("transform=\"rotate").count() as u64;
        assert!(labels <= MAX_LABELS, "{labels}");
        assert!(
            s.contains(&format!("viewBox=\"0 0 {} ", LEFT + 2 * 1000 + 8)),
            "{}",
            &s[..200]
        );
    }
}
