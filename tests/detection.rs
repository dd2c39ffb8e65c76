//! Detection quality on a labelled synthetic stream: a regression guard for the detector.
//!
//! The full benchmark (`vigie evaluate`, 90 days × 40 topics) is in docs/DETECTION.md; this
//! runs a smaller stream so it fits in the test suite, with margins below the full figures.

use vigie::evaluation::{self, StreamOptions};

#[test]
fn default_detector_catches_large_bursts_and_beats_the_elastalert_style_ratio() {
    let stream = evaluation::synthesize(&StreamOptions {
        seed: 7,
        days: 45,
        topics: 12,
        ..Default::default()
    });
    assert!(stream.labels.len() >= 30, "{} bursts", stream.labels.len());
    let prepared = evaluation::prepare(&stream);
    let scores: Vec<_> = evaluation::contenders()
        .into_iter()
        .take(2)
        .map(|(name, cfg)| evaluation::score(&stream, name, &evaluation::run(&prepared, &cfg)))
        .collect();
    eprintln!("{}", evaluation::table(&scores));
    let (vigie, elastalert) = (&scores[0], &scores[1]);
    assert!(vigie.recall_3x >= 0.8, "recall {}", vigie.recall_3x);
    assert!(
        vigie.false_per_topic_30d <= 1.5,
        "{}",
        vigie.false_per_topic_30d
    );
    assert!(vigie.median_delay_3x.unwrap_or(f64::MAX) <= 45.0);
    // 10× and 20× bursts: nearly all caught.
    let (hit, n) = vigie
        .by_height
        .iter()
        .filter(|(h, _, _)| *h >= 10.0)
        .fold((0, 0), |(a, b), (_, hit, n)| (a + hit, b + n));
    assert!(hit * 10 >= n * 9, "{hit}/{n} bursts of 10× or more");
    assert!(
        vigie.nab > elastalert.nab + 20.0,
        "{} vs {}",
        vigie.nab,
        elastalert.nab
    );
    assert!(vigie.false_per_topic_30d < elastalert.false_per_topic_30d / 3.0);
}
