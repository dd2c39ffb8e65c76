//! The metrics spec (`vigie::telemetry::ALL`) against what names metrics elsewhere: the
//! table of docs/operations.md and the Prometheus alerting rules in deploy/prometheus.
//! A metric renamed in code and not in those fails here.

use std::collections::BTreeSet;

use vigie::telemetry::ALL;

fn repo_file(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `vigie_…` names in a text, histogram suffixes taken off.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("vigie_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| ALL.contains(b)))
            .unwrap_or(&name);
        out.insert(base.to_string());
    }
    out
}

#[test]
fn every_metric_is_documented_and_the_docs_name_no_other() {
    let docs = repo_file("docs/operations.md");
    let table: String = (docs.lines())
        .filter(|l| l.starts_with("| `vigie_"))
        .collect::<Vec<_>>()
        .join("\n");
    let documented = names_in(&table);
    let spec: BTreeSet<String> = ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, spec,
        "docs/operations.md's metrics table against telemetry::ALL"
    );
}

#[test]
fn the_prometheus_rules_parse_and_use_only_exported_metrics() {
    let text = repo_file("deploy/prometheus/vigie-alerts.yml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut alerts = BTreeSet::new();
    for g in groups {
        for r in g["rules"].as_vec().expect("rules") {
            let name = r["alert"].as_str().expect("each rule is an alert");
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: expr"));
            for metric in names_in(expr) {
                assert!(
                    ALL.contains(&metric.as_str()),
                    "{name} uses {metric}, which vigie does not export"
                );
            }
            let severity = r["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{name}: severity"
            );
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");
}
