//! The `"text"` fields of a JSON-lines corpus, shared by the examples that
//! read one (`mod jsonl;`).

use std::io::BufRead;
use std::path::Path;

/// The `"text"` of each non-blank line of `path`, at most `limit` of them;
/// an unreadable file, a malformed line or a line without a `"text"`
/// string is an error naming the file and line.
pub fn read_texts(
    path: &Path,
    limit: Option<usize>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut texts = Vec::new();
    for (no, line) in std::io::BufReader::new(file).lines().enumerate() {
        if limit.is_some_and(|l| texts.len() >= l) {
            break;
        }
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), no + 1))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| format!("{}:{}: no \"text\" string field", path.display(), no + 1))?;
        texts.push(text.to_owned());
    }
    Ok(texts)
}
