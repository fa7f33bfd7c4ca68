//! The overview's line of calls per second: a small SVG drawn on the server, so the page needs no chart
//! library and reads the same without JavaScript. Hand-written because it is one polyline and two labels;
//! a charting crate would bring far more than it would save.

use maud::{html, Markup, PreEscaped};

/// Width and height of the drawing, in SVG units (it scales to the page).
const W: f64 = 600.0;
const H: f64 = 120.0;
/// Room on the left for the scale's labels.
const LEFT: f64 = 34.0;

/// The points of `series` (one value a second, oldest first) as SVG
/// coordinates, scaled so `top` is the drawing's top.
pub(crate) fn points(series: &[u64], top: f64) -> String {
    let n = series.len().max(2) - 1;
    let top = top.max(1.0);
    series
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = LEFT + (W - LEFT) * i as f64 / n as f64;
            let y = H - (H - 4.0) * (*v as f64 / top).min(1.0);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The scale's top: a little above the larger of the limit and the highest value.
pub(crate) fn scale_top(series: &[u64], limit: u32) -> f64 {
    let max = series.iter().copied().max().unwrap_or(0).max(u64::from(limit)) as f64;
    (max * 1.15).ceil().max(1.0)
}

/// The chart of one app: its calls per second and a dashed line at `limit`.
pub(crate) fn calls(series: &[u64], limit: u32, label: &str) -> Markup {
    let top = scale_top(series, limit);
    let limit_y = H - (H - 4.0) * (f64::from(limit) / top).min(1.0);
    let svg = format!(
        r##"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{label}" preserveAspectRatio="none">
<line class="axis" x1="{LEFT}" y1="{H}" x2="{W}" y2="{H}"/>
<line class="limit" x1="{LEFT}" y1="{limit_y:.1}" x2="{W}" y2="{limit_y:.1}"/>
<text class="lbl" x="2" y="{ly:.1}">{limit}/s</text>
<text class="lbl" x="2" y="{H}">0</text>
<polyline class="line" points="{pts}"/>
</svg>"##,
        ly = (limit_y + 4.0).min(H - 10.0),
        pts = points(series, top),
        label = maud::html! { (label) }.into_string(),
    );
    html! {
        figure.chart {
            (PreEscaped(svg))
            figcaption { span { "5 min ago" } span { "now" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_span_the_width_and_clamp_at_the_top() {
        let p = points(&[0, 50, 100], 50.0);
        let xy: Vec<(f64, f64)> = p
            .split(' ')
            .map(|s| {
                let (x, y) = s.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(xy.len(), 3);
        assert_eq!(xy[0], (LEFT, H), "oldest at the left, 0 at the bottom");
        assert_eq!(xy[2].0, W, "newest at the right");
        assert_eq!(xy[1].1, 4.0, "the top value at the top margin");
        assert_eq!(xy[2].1, 4.0, "above the top is clamped");
        assert_eq!(points(&[], 10.0), "");
    }

    #[test]
    fn the_scale_shows_the_limit_and_escapes_the_label() {
        assert_eq!(scale_top(&[0, 10], 50), 58.0);
        assert_eq!(scale_top(&[80], 50), 92.0);
        assert_eq!(scale_top(&[], 0), 1.0);
        let svg = calls(&[1, 2], 50, "app <1>").into_string();
        assert!(svg.contains("app &lt;1&gt;") && svg.contains("50/s"), "{svg}");
    }
}
