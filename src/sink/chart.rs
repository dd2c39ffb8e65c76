//! The coverage chart attached to alert emails: the last 48 hours of a rule's stories per
//! bucket (bars), the expected band from the baseline (shaded: expected ± 2√expected), and the
//! alert window (red). No text is drawn, so no font is needed on the server; the email
//! around it says what it shows.

use plotters::prelude::*;

use crate::engine::{AlertEvent, ChartSeries};

pub const WIDTH: u32 = 720;
pub const HEIGHT: u32 = 240;

/// Renders an alert's chart as PNG bytes.
pub fn png(e: &AlertEvent) -> Result<Vec<u8>, String> {
    render(
        &e.chart,
        &[(e.window_start.timestamp(), e.window_end.timestamp())],
        WIDTH,
    )
}

/// Renders a series as PNG bytes, `width` pixels wide, with `spans` (unix seconds, start
/// and end) shaded red: an alert's window, or every alert of a backtest.
pub fn render(c: &ChartSeries, spans: &[(i64, i64)], width: u32) -> Result<Vec<u8>, String> {
    let width = width.max(64);
    if c.stories.is_empty() || c.bucket_secs <= 0 {
        return Err("no series to draw".into());
    }
    let mut rgb = vec![255u8; (width * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| x.to_string())?;
        let n = c.stories.len() as f64;
        let top = c
            .stories
            .iter()
            .map(|&s| s as f64)
            .chain(
                c.expected
                    .iter()
                    .map(|&x| x as f64 + 2.0 * (x as f64).sqrt()),
            )
            .fold(1.0, f64::max)
            * 1.1;
        let (w, h) = (width as f64, HEIGHT as f64);
        let margin = 8.0;
        let x = |i: f64| (margin + i / n * (w - 2.0 * margin)) as i32;
        let y = |v: f64| (h - margin - v / top * (h - 2.0 * margin)) as i32;
        // Alert spans.
        let bucket = |t: i64| ((t - c.start) as f64 / c.bucket_secs as f64).clamp(0.0, n);
        let spans: Vec<(f64, f64)> = spans.iter().map(|&(a, b)| (bucket(a), bucket(b))).collect();
        for &(a, b) in &spans {
            root.draw(&Rectangle::new(
                [(x(a), y(top)), (x(b).max(x(a) + 1), y(0.0))],
                RGBColor(255, 220, 220).filled(),
            ))
            .map_err(|x| x.to_string())?;
        }
        // Expected band.
        let upper: Vec<(i32, i32)> = c
            .expected
            .iter()
            .enumerate()
            .map(|(i, &v)| (x(i as f64 + 0.5), y(v as f64 + 2.0 * (v as f64).sqrt())))
            .collect();
        let lower: Vec<(i32, i32)> = c
            .expected
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &v)| {
                (
                    x(i as f64 + 0.5),
                    y((v as f64 - 2.0 * (v as f64).sqrt()).max(0.0)),
                )
            })
            .collect();
        let band: Vec<(i32, i32)> = upper.into_iter().chain(lower).collect();
        root.draw(&Polygon::new(band, RGBColor(200, 220, 245).filled()))
            .map_err(|x| x.to_string())?;
        // Observed stories.
        for (i, &s) in c.stories.iter().enumerate() {
            if s > 0 {
                let inside = spans
                    .iter()
                    .any(|&(a, b)| (i as f64) >= a && (i as f64) < b);
                let color = if inside {
                    RGBColor(200, 30, 30)
                } else {
                    RGBColor(40, 60, 110)
                };
                root.draw(&Rectangle::new(
                    [
                        (x(i as f64), y(s as f64)),
                        (x(i as f64 + 1.0).max(x(i as f64) + 1), y(0.0)),
                    ],
                    color.filled(),
                ))
                .map_err(|x| x.to_string())?;
            }
        }
        // Expected line and baseline axis.
        let line: Vec<(i32, i32)> = c
            .expected
            .iter()
            .enumerate()
            .map(|(i, &v)| (x(i as f64 + 0.5), y(v as f64)))
            .collect();
        root.draw(&PathElement::new(
            line,
            RGBColor(30, 90, 200).stroke_width(2),
        ))
        .map_err(|x| x.to_string())?;
        root.draw(&PathElement::new(
            vec![(x(0.0), y(0.0)), (x(n), y(0.0))],
            BLACK,
        ))
        .map_err(|x| x.to_string())?;
        root.present().map_err(|x| x.to_string())?;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|x| x.to_string())?;
        writer.write_image_data(&rgb).map_err(|x| x.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_png() {
        let mut e: AlertEvent = serde_json::from_value(serde_json::json!({
            "event_id": "kz:1:started", "alert_id": "kz:1", "rule": "kz", "rule_name": "Kazakhstan", "kind": "started",
            "at": "2022-01-05T12:00:00Z", "started_at": "2022-01-05T12:00:00Z",
            "window_start": "2022-01-05T11:00:00Z", "window_end": "2022-01-05T12:05:00Z", "detector": "baseline",
            "observed": 30, "expected": 2.0, "ratio": 10.0, "p_value": 1e-9, "articles": 40, "sources": 9,
            "top_articles": [], "top_entities": [], "top_countries": [], "top_keywords": [], "notify": []
        }))
        .unwrap();
        let start = e.window_end.timestamp() - 48 * 3600;
        e.chart = ChartSeries {
            start,
            bucket_secs: 300,
            stories: (0..576)
                .map(|i| {
                    if i >= 563 {
                        3 + (i % 4)
                    } else {
                        (i % 7 == 0) as u32
                    }
                })
                .collect(),
            expected: (0..576)
                .map(|i| 0.2 + 0.15 * ((i as f32) / 45.0).sin().abs())
                .collect(),
        };
        let png = png(&e).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        if let Ok(path) = std::env::var("VIGIE_SAVE_CHART") {
            std::fs::write(path, &png).unwrap();
        }
        e.chart = ChartSeries::default();
        assert!(super::png(&e).is_err());
    }
}
