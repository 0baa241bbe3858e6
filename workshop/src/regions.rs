//! Named regions in a source file: `// [name]` … `// [/name]`, each marker alone on its line.
//!
//! Regions may nest and overlap; a name is used once per file. The marker lines belong to no
//! region's text: [`Region::text`] leaves out every marker line inside it, so a snippet or a
//! skeleton never shows one.

use std::collections::BTreeMap;

/// One region: its name and its lines (0-based, the markers' lines excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    /// Index of the `// [name]` line.
    pub open: usize,
    /// Index of the `// [/name]` line.
    pub close: usize,
    /// The lines between, marker lines left out, dedented by their common indentation.
    pub text: String,
}

/// A marker line: `Some((name, is_end))` for `// [name]` or `// [/name]`.
pub fn marker(line: &str) -> Option<(&str, bool)> {
    let inner = line.trim().strip_prefix("// [")?.strip_suffix(']')?;
    let (name, end) = match inner.strip_prefix('/') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some((name, end))
}

/// Every region of `source`, by name. Errors name the line (1-based) and what is wrong.
pub fn parse(source: &str) -> Result<BTreeMap<String, Region>, String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut found = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, end)) = marker(line) else {
            continue;
        };
        if !end {
            if open.insert(name, i).is_some() || found.contains_key(name) {
                return Err(format!("line {}: region [{name}] opened twice", i + 1));
            }
            continue;
        }
        let Some(start) = open.remove(name) else {
            return Err(format!("line {}: [/{name}] closes no open region", i + 1));
        };
        let body: Vec<&str> = lines[start + 1..i]
            .iter()
            .copied()
            .filter(|l| marker(l).is_none())
            .collect();
        let region = Region {
            name: name.to_string(),
            open: start,
            close: i,
            text: dedent(&body),
        };
        found.insert(name.to_string(), region);
    }
    if let Some((name, line)) = open.into_iter().next() {
        return Err(format!(
            "line {}: region [{name}] is never closed",
            line + 1
        ));
    }
    Ok(found)
}

/// `lines` joined, less the indentation they all share (blank lines do not count).
pub fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out
}

/// `source` with every marker line removed (what a learner's skeleton or a listing shows).
pub fn strip_markers(source: &str) -> String {
    let mut out = String::new();
    for line in source.lines().filter(|l| marker(l).is_none()) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_regions_leave_out_the_inner_markers() {
        let src = "fn main() {\n    // [outer]\n    let a = 1;\n    // [inner]\n        let b = 2;\n    // [/inner]\n    // [/outer]\n}\n";
        let regions = parse(src).unwrap();
        assert_eq!(regions["outer"].text, "let a = 1;\n    let b = 2;\n");
        assert_eq!(regions["inner"].text, "let b = 2;\n");
        assert_eq!((regions["inner"].open, regions["inner"].close), (3, 5));
        assert_eq!(strip_markers(src).lines().count(), 4);
    }

    #[test]
    fn broken_markers_are_errors_with_their_line() {
        assert_eq!(
            parse("// [a]\n").unwrap_err(),
            "line 1: region [a] is never closed"
        );
        assert_eq!(
            parse("x\n// [/a]\n").unwrap_err(),
            "line 2: [/a] closes no open region"
        );
        let twice = "// [a]\n// [/a]\n// [a]\n// [/a]\n";
        assert_eq!(parse(twice).unwrap_err(), "line 3: region [a] opened twice");
    }

    #[test]
    fn only_lone_lowercase_markers_count() {
        assert_eq!(marker("  // [accept]"), Some(("accept", false)));
        assert_eq!(marker("// [/accept-loop]"), Some(("accept-loop", true)));
        assert_eq!(marker("let v = x[i]; // [a]"), None);
        assert_eq!(marker("// [Accept]"), None);
        assert_eq!(marker("// []"), None);
        assert_eq!(marker("// see [RFC 1928]"), None);
    }
}
