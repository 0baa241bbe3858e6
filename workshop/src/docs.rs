//! `make docs`: every fenced block that follows an include line is the region it names.
//!
//! In docs/lessons/*.md and README.md, a line
//!
//! ```text
//! <!-- include lessons/01-hello.rs [reuseaddr] -->
//! ```
//!
//! followed by a fenced block (```` ```rust ```` … ```` ``` ````) makes that block the
//! region `[reuseaddr]` of lessons/01-hello.rs, dedented, markers left out. [`render`]
//! rewrites the blocks; the docs test fails when rendering would change a file, or when a
//! named file or region no longer exists.

use std::path::Path;

use crate::regions;

/// The include line's file and region: `<!-- include FILE [NAME] -->`.
pub fn include_line(line: &str) -> Option<(&str, &str)> {
    let inner = line
        .trim()
        .strip_prefix("<!-- include ")?
        .strip_suffix("-->")?
        .trim();
    let (file, name) = inner.split_once(" [")?;
    Some((file.trim(), name.strip_suffix(']')?))
}

/// `markdown` with every included block replaced by its region, read through `read`
/// (a path relative to the project's root → its text). Errors name the markdown line.
pub fn render(
    markdown: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        out.push_str(lines[i]);
        out.push('\n');
        let Some((file, name)) = include_line(lines[i]) else {
            i += 1;
            continue;
        };
        let at = i + 1;
        let fence = lines.get(at).copied().unwrap_or("");
        if !fence.starts_with("```") {
            return Err(format!(
                "line {at}: an include line must be followed by a fenced block"
            ));
        }
        let Some(len) = lines[at + 1..].iter().position(|l| l.trim() == "```") else {
            return Err(format!("line {}: the fenced block is never closed", at + 1));
        };
        let source = read(file).map_err(|e| format!("line {at}: {file}: {e}"))?;
        let found = regions::parse(&source).map_err(|e| format!("{file}: {e}"))?;
        let region = found
            .get(name)
            .ok_or_else(|| format!("line {at}: {file} has no region [{name}]"))?;
        out.push_str(fence);
        out.push('\n');
        out.push_str(&region.text);
        out.push_str("```\n");
        i = at + 1 + len + 1;
    }
    Ok(out)
}

/// The files `make docs` renders, relative to the root: the README and every lesson's page.
pub fn targets(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs/lessons")) {
        let mut pages: Vec<_> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        pages.sort();
        files.extend(pages);
    }
    files
}

/// Renders `file` against the sources under `root`: (its text now, its rendered text).
pub fn render_file(root: &Path, file: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut read = |rel: &str| std::fs::read_to_string(root.join(rel)).map_err(|e| e.to_string());
    let rendered = render(&text, &mut read).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((text, rendered))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "fn main() {\n    // [hello]\n    say(\"hi\");\n    // [/hello]\n}\n";

    fn read(rel: &str) -> Result<String, String> {
        match rel {
            "lessons/x.rs" => Ok(SRC.to_string()),
            _ => Err("No such file".into()),
        }
    }

    #[test]
    fn a_stale_block_is_replaced_by_its_region() {
        let md = "Text.\n<!-- include lessons/x.rs [hello] -->\n```rust\nold();\nolder();\n```\nAfter.\n";
        let out = render(md, &mut read).unwrap();
        let want =
            "Text.\n<!-- include lessons/x.rs [hello] -->\n```rust\nsay(\"hi\");\n```\nAfter.\n";
        assert_eq!(out, want);
        assert_eq!(
            render(&out, &mut read).unwrap(),
            out,
            "rendering is idempotent"
        );
    }

    #[test]
    fn a_missing_region_or_file_is_an_error() {
        let gone = "<!-- include lessons/x.rs [bye] -->\n```rust\n```\n";
        assert_eq!(
            render(gone, &mut read).unwrap_err(),
            "line 1: lessons/x.rs has no region [bye]"
        );
        let no_file = "<!-- include lessons/y.rs [hello] -->\n```rust\n```\n";
        assert!(render(no_file, &mut read)
            .unwrap_err()
            .contains("No such file"));
        let no_block = "<!-- include lessons/x.rs [hello] -->\ntext\n";
        assert!(render(no_block, &mut read).is_err());
    }
}
