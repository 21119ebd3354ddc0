//! The optional SVG for reports (`--plot`): latency by percentile for deliveries and acks (the
//! x axis in "nines", so p99 and p99.9 get room), and deliveries per second over the run.

use std::path::Path;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::TimelineSample;

/// The deepest percentile drawn: 1 - 10^-NINES (99.999%).
const NINES: f64 = 5.0;

/// Points (nines, milliseconds) of a latency curve: x = -log10(1 - q).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let steps = 100;
    (0..=steps)
        .map(|i| {
            let x = NINES * f64::from(i) / f64::from(steps);
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1e6)
        })
        .collect()
}

/// How the nines axis is labelled: 0 → "0%", 1 → "90%", 2 → "99%", 3 → "99.9%".
pub fn nines_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    let decimals = (x.round() as i32 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

/// Per-second rates (t, frames/s) from the cumulative timeline.
pub fn rates(timeline: &[TimelineSample]) -> Vec<(f64, f64)> {
    timeline
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t_secs - w[0].t_secs;
            (dt > 0.0).then(|| {
                (
                    w[1].t_secs,
                    w[1].frames.saturating_sub(w[0].frames) as f64 / dt,
                )
            })
        })
        .collect()
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// Draws the SVG.
pub fn draw(
    path: &Path,
    title: &str,
    delivery: &Histogram<u64>,
    ack: &Histogram<u64>,
    timeline: &[TimelineSample],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (upper, lower) = root.split_vertically(440);

    let delivery_curve = percentile_curve(delivery);
    let ack_curve = percentile_curve(ack);
    let top = delivery_curve
        .iter()
        .chain(&ack_curve)
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!("{title}: latency by percentile"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..NINES, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    if !delivery_curve.is_empty() {
        chart
            .draw_series(LineSeries::new(delivery_curve, BLUE.stroke_width(2)))
            .map_err(err)?
            .label("delivery (send to msg)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    if !ack_curve.is_empty() {
        chart
            .draw_series(LineSeries::new(ack_curve, RED.stroke_width(2)))
            .map_err(err)?
            .label("ack (send to sent)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let points = rates(timeline);
    let end = timeline.last().map_or(1.0, |s| s.t_secs).max(1.0);
    let peak = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(&lower)
        .caption("msg frames received per second", ("sans-serif", 18))
        .margin(15)
        .margin_right(70)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..peak)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start of the run")
        .y_desc("deliveries/s")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points, RGBColor(0, 128, 0).stroke_width(2)))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis_reads_as_percentiles() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    #[test]
    fn curves_rise_and_rates_follow_the_timeline() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
        for v in 1..=10_000u64 {
            h.record(v * 1000).expect("in range");
        }
        let curve = percentile_curve(&h);
        assert_eq!(curve.len(), 101);
        assert!(curve.windows(2).all(|w| w[1].1 >= w[0].1));
        assert!((curve[curve.len() - 1].1 - 10.0).abs() < 0.05);

        let sample = |t: f64, frames: u64| TimelineSample {
            t_secs: t,
            phase: "measure",
            open: 0,
            sent: 0,
            acked: 0,
            frames,
        };
        let r = rates(&[sample(0.0, 0), sample(1.0, 500), sample(2.0, 1500)]);
        assert_eq!(r, vec![(1.0, 500.0), (2.0, 1000.0)]);
    }

    #[test]
    fn an_svg_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plot.svg");
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
        h.record(1_500_000).expect("in range");
        draw(&path, "test", &h, &h, &[]).expect("draws");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg") && svg.contains("latency by percentile"));
    }
}
