//! Articles from files: JSON (one object or an array), JSONL, or raw scraped text.
//!
//! Used by `vigie match`, `backtest` and `publish`. Each article becomes a [`Record`] whose
//! payload is the JSON of the feed contract, so files go through exactly the same parser
//! as Kafka messages.

use std::path::{Path, PathBuf};

use super::{Record, SourceError};

/// Expands arguments (files, directories, `-` for stdin) into a sorted list of inputs.
pub fn expand_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    for a in args {
        if a.as_os_str() == "-" {
            out.push(a.clone());
            continue;
        }
        let meta = std::fs::metadata(a).map_err(|e| SourceError::Io {
            path: a.display().to_string(),
            source: e,
        })?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .map_err(|e| SourceError::Io {
                    path: a.display().to_string(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// Reads one input into payloads (one per article).
pub fn read_payloads(path: &Path) -> Result<Vec<Vec<u8>>, SourceError> {
    let (bytes, mtime) = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|e| {
            SourceError::Io {
                path: "-".into(),
                source: e,
            }
        })?;
        (buf, None)
    } else {
        let b = std::fs::read(path).map_err(|e| SourceError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mtime = std::fs::metadata(path)
            .ok()
            .and_then(|m| m.modified().ok())
            .map(chrono::DateTime::<chrono::Utc>::from);
        (b, mtime)
    };
    Ok(split_payloads(&bytes, mtime, &path.display().to_string()))
}

/// Splits file contents into article payloads: a JSON array, JSONL, one JSON object, or raw
/// text (converted with [`crate::rawtext`]). Unparseable JSONL lines are passed through as
/// they are, so the article parser refuses them with a reason like any bad message.
pub fn split_payloads(
    bytes: &[u8],
    mtime: Option<chrono::DateTime<chrono::Utc>>,
    name: &str,
) -> Vec<Vec<u8>> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        if let Ok(serde_json::Value::Array(items)) =
            serde_json::from_slice::<serde_json::Value>(bytes)
        {
            return items
                .into_iter()
                .map(|v| serde_json::to_vec(&v).unwrap_or_default())
                .collect();
        }
    }
    if trimmed.first() == Some(&b'{') {
        if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() {
            return vec![bytes.to_vec()];
        }
        return bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .map(|l| l.to_vec())
            .collect();
    }
    let text = String::from_utf8_lossy(bytes);
    let article = crate::rawtext::parse(&text, mtime, name);
    vec![serde_json::to_vec(&article).unwrap_or_default()]
}

/// Records from a list of inputs, numbered as one partition.
pub fn records(inputs: &[PathBuf], topic: &str) -> Result<Vec<Record>, SourceError> {
    let mut out = Vec::new();
    for p in inputs {
        for payload in read_payloads(p)? {
            out.push(Record {
                topic: topic.into(),
                partition: 0,
                offset: out.len() as i64,
                key: None,
                payload: Some(payload),
                timestamp_ms: None,
            });
        }
    }
    Ok(out)
}
