//! SVG figures, for readers who take in a picture faster than a table (plotters' SVG backend:
//! plain SVG text, no system library, fonts left to the viewer).
//!
//! - [`roofline`]: one decode step node by node (`qwen-kernels profile --svg`), or the model
//!   benchmark's steps (`benches/model.rs`): bytes moved against time, log-log, with the copy
//!   bandwidth's line (time = bytes / bandwidth: no node can be below it) and the per-node floor
//!   (that plus a fixed cost per node: where the profile's model puts a node).
//! - [`error_growth`]: the whole model layer by layer (`qwen-kernels diff --svg`): our
//!   free-running error after each layer and PyTorch bf16's, both against the float64 truth.

use crate::diff::ModelReport;
use crate::error::{Error, Result};
use plotters::prelude::*;

/// One point of a roofline: a node (or a whole step) of `bytes` moved in `us` microseconds.
#[derive(Clone, Debug)]
pub struct RooflinePoint {
    pub label: String,
    pub bytes: f64,
    pub us: f64,
}

/// What a roofline is drawn against.
#[derive(Clone, Debug)]
pub struct Roofline {
    pub title: String,
    /// "measured" or "modelled": said in the legend beside the points.
    pub times: &'static str,
    /// The copy bandwidth of the line, bytes per second, and where it comes from.
    pub bandwidth: f64,
    pub bandwidth_source: String,
    /// The fixed cost per node of the floor, microseconds (0: no floor line).
    pub fixed_us: f64,
    pub points: Vec<RooflinePoint>,
}

fn plot_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument { op: "plot", detail: format!("{what}: {e}") }
}

/// The lowest and highest power of ten around the positive values (at least one decade).
fn decades(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite() && *v > 0.0).fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return None;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    Some((lo, hi))
}

/// The roofline as an SVG document. Points with no bytes or no time are left out and counted in
/// the caption (a GPU's profile measures times but counts no bytes: its nodes all are).
pub fn roofline(r: &Roofline) -> Result<String> {
    let points: Vec<&RooflinePoint> = r.points.iter().filter(|p| p.bytes > 0.0 && p.us > 0.0 && p.bytes.is_finite() && p.us.is_finite()).collect();
    let left_out = r.points.len() - points.len();
    let (x0, x1) = decades(points.iter().map(|p| p.bytes)).unwrap_or((1e3, 1e10));
    let line_us = |bytes: f64| bytes / r.bandwidth * 1e6;
    // Time from a decade below the fastest point (or the node floor) to the line's top end: the
    // line itself runs down out of the figure where nothing could be measured anyway.
    let lowest = points.iter().map(|p| p.us).chain([r.fixed_us].into_iter().filter(|&f| f > 0.0)).fold(f64::INFINITY, f64::min);
    let lowest = if lowest.is_finite() { lowest / 10.0 } else { line_us(x0) };
    let (y0, y1) = decades(points.iter().map(|p| p.us).chain([lowest, line_us(x1)])).expect("the line's top end is positive");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error("roofline", e))?;
        let caption = if left_out > 0 { format!("{} ({left_out} of {} without bytes or time left out)", r.title, r.points.len()) } else { r.title.clone() };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(|e| plot_error("roofline", e))?;
        chart
            .configure_mesh()
            .x_desc("bytes moved")
            .y_desc("time (us)")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.0e}") })
            .draw()
            .map_err(|e| plot_error("roofline", e))?;
        let xs: Vec<f64> = (0..=64).map(|i| x0 * (x1 / x0).powf(i as f64 / 64.0)).collect();
        let copy_label = format!("copy bandwidth {:.2} TB/s ({})", r.bandwidth / 1e12, r.bandwidth_source);
        chart
            .draw_series(LineSeries::new(xs.iter().map(|&x| (x, line_us(x))).filter(|&(_, y)| y >= y0 && y <= y1), BLUE.stroke_width(2)))
            .map_err(|e| plot_error("roofline", e))?
            .label(copy_label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if r.fixed_us > 0.0 {
            chart
                .draw_series(LineSeries::new(xs.iter().map(|&x| (x, line_us(x) + r.fixed_us)).filter(|&(_, y)| y >= y0 && y <= y1), GREEN.stroke_width(2)))
                .map_err(|e| plot_error("roofline", e))?
                .label(format!("per-node floor: bandwidth + {} us a node", r.fixed_us))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
        }
        chart
            .draw_series(points.iter().map(|p| Circle::new((p.bytes, p.us), 4, RED.filled())))
            .map_err(|e| plot_error("roofline", e))?
            .label(format!("{} ({} {})", r.times, points.len(), if points.len() == 1 { "point" } else { "points" }))
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error("roofline", e))?;
        root.present().map_err(|e| plot_error("roofline", e))?;
    }
    Ok(with_titles(svg, points.iter().map(|p| format!("{}: {:.0} bytes, {:.2} us", p.label, p.bytes, p.us))))
}

/// Name each point in the document (an SVG `<desc>` per point, in order), so the figure can be
/// searched and read without a viewer.
fn with_titles(svg: String, titles: impl Iterator<Item = String>) -> String {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let desc: String = titles.map(|t| format!("<desc>{}</desc>\n", escape(&t))).collect();
    match svg.rfind("</svg>") {
        Some(end) => format!("{}{desc}{}", &svg[..end], &svg[end..]),
        None => svg,
    }
}

/// The per-layer error growth of a `diff` report as an SVG document: rel-L2 against the float64
/// truth after each layer (log scale), ours free-running (at the report's dtype) and PyTorch's bf16
/// run's (the peer the goldens hold).
pub fn error_growth(r: &ModelReport) -> Result<String> {
    let ours: Vec<(f64, f64)> = r.layers.iter().enumerate().map(|(i, l)| (i as f64, l.free_out.rel_l2)).collect();
    let torch: Vec<(f64, f64)> = r.layers.iter().enumerate().map(|(i, l)| (i as f64, l.torch_out.rel_l2)).collect();
    let (y0, y1) = decades(ours.iter().chain(&torch).map(|p| p.1)).ok_or_else(|| plot_error("error growth", "no layer with a nonzero error"))?;
    let last = r.layers.len().saturating_sub(1).max(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error("error growth", e))?;
        let title = format!("{} {}: error after each layer against the float64 truth ({})", r.model, r.dtype, r.forward);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5..last + 0.5, (y0..y1).log_scale())
            .map_err(|e| plot_error("error growth", e))?;
        chart
            .configure_mesh()
            .x_desc("layer")
            .y_desc("rel-L2 against the truth")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(|e| plot_error("error growth", e))?;
        let keep = |p: &&(f64, f64)| p.1 > 0.0 && p.1.is_finite();
        for (series, color, label) in [(&ours, RED, format!("ours ({})", r.forward)), (&torch, BLUE, "PyTorch bf16".to_string())] {
            chart
                .draw_series(LineSeries::new(series.iter().filter(keep).copied(), color.stroke_width(2)))
                .map_err(|e| plot_error("error growth", e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(series.iter().filter(keep).map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_error("error growth", e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error("error growth", e))?;
        root.present().map_err(|e| plot_error("error growth", e))?;
    }
    let rows = r.layers.iter().enumerate().map(|(i, l)| format!("layer {i}: ours {:.3e}, PyTorch {:.3e}", l.free_out.rel_l2, l.torch_out.rel_l2));
    Ok(with_titles(svg, rows))
}

/// Write `svg` to `path`, naming the file in the error.
pub fn write(path: &std::path::Path, svg: &str) -> Result<()> {
    std::fs::write(path, svg).map_err(|e| Error::InvalidArgument { op: "--svg", detail: format!("cannot write {}: {e}", path.display()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roofline_of(points: &[(f64, f64)]) -> Roofline {
        Roofline {
            title: "test".into(),
            times: "measured",
            bandwidth: 4.3e12,
            bandwidth_source: "test".into(),
            fixed_us: 1.5,
            points: points.iter().enumerate().map(|(i, &(bytes, us))| RooflinePoint { label: format!("n{i}"), bytes, us }).collect(),
        }
    }

    #[test]
    fn a_point_a_node_and_those_without_bytes_are_counted_out() {
        let svg = roofline(&roofline_of(&[(1e6, 2.0), (5e8, 120.0), (0.0, 3.0), (2e3, 1.6)])).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three points and the legend's marker; the fourth has no bytes.
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        assert_eq!(svg.matches("<desc>").count(), 3, "{svg}");
        assert!(svg.contains("<desc>n1: 500000000 bytes, 120.00 us</desc>"), "{svg}");
        assert!(svg.contains("(1 of 4 without bytes or time left out)"), "{svg}");
        assert!(svg.contains("copy bandwidth 4.30 TB/s (test)") && svg.contains("per-node floor"), "{svg}");
    }

    #[test]
    fn a_gpu_profile_without_bytes_still_draws_its_lines() {
        let svg = roofline(&roofline_of(&[(0.0, 3.0), (0.0, 4.0)])).unwrap();
        assert_eq!(svg.matches("<desc>").count(), 0);
        assert!(svg.contains("(2 of 2 without bytes or time left out)") && svg.contains("copy bandwidth"), "{svg}");
    }

    #[test]
    fn decades_cover_the_values() {
        assert_eq!(decades([3.0, 250.0].into_iter()), Some((1.0, 1000.0)));
        assert_eq!(decades([5.0].into_iter()), Some((1.0, 10.0)));
        assert_eq!(decades([0.0, f64::NAN].into_iter()), None);
    }
}
