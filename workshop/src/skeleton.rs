//! An exercise's skeleton, generated from its lesson: the lesson's files with the regions its
//! spec names as gaps replaced by a `todo!("…")`, the `--mistake` branches left out, every
//! marker line stripped.
//!
//! The spec, `exercises/NN/exercise.txt`, one directive a line (`#` starts a comment):
//!
//! ```text
//! file lessons/03-interactive/main.rs src/main.rs     a lesson file and its place in the crate
//! gap accept                                          region [accept] becomes the lines below,
//!     let conn: OwnedFd = todo!("accept(2): …");      indented 4 (re-indented to the region's)
//! use src/main.rs std::os::fd::OwnedFd;               an extra use line after the file's last one
//! drop let mut kept = Vec::new();                     a line (a statement, a block) of the lesson
//! ```
//!
//! The `--mistake` branches go by their shape, which every lesson keeps (principle 9):
//! `if !mistake(M) { right } else { naive }` and `if !mistake(M) { right }` become `right`;
//! `let x = if !mistake(M) { a } else { b };` becomes `let x = a;`; `if mistake(M) { naive }`
//! goes, with the comment lines just above it (`else { right }` stays as `right`); a match
//! arm guarded `if mistake(M)` goes; `c || mistake(M)` becomes `c`. The mistakes'
//! declaration and the `--mistake` flag are `drop` lines of the spec. A spec line that no
//! longer matches its lesson is an error, so the drift test names it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::regions;

/// One exercise's spec, parsed.
#[derive(Debug, Default, Clone)]
pub struct Spec {
    /// (lesson file relative to the root, its path in the learner's crate).
    pub files: Vec<(String, String)>,
    /// Region name → the lines that replace it (indented relative to the region).
    pub gaps: BTreeMap<String, Vec<String>>,
    /// (crate file, use path) for extra `use` lines.
    pub uses: Vec<(String, String)>,
    /// Lines (trimmed) to drop, with their block or statement.
    pub drops: Vec<String>,
}

/// Parses an `exercise.txt`. Errors name the line.
pub fn parse_spec(text: &str) -> Result<Spec, String> {
    let mut spec = Spec::default();
    let mut gap: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = i + 1;
        if let Some(body) = line.strip_prefix("    ") {
            let Some(name) = &gap else {
                return Err(format!("line {at}: an indented line outside a gap"));
            };
            spec.gaps.get_mut(name).unwrap().push(body.to_string());
            continue;
        }
        gap = None;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match word {
            "file" => {
                let (from, to) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("line {at}: file LESSON-FILE CRATE-FILE"))?;
                spec.files.push((from.to_string(), to.trim().to_string()));
            }
            "gap" => {
                if spec.gaps.insert(rest.to_string(), Vec::new()).is_some() {
                    return Err(format!("line {at}: gap [{rest}] twice"));
                }
                gap = Some(rest.to_string());
            }
            "use" => {
                let (file, path) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("line {at}: use CRATE-FILE PATH;"))?;
                spec.uses.push((file.to_string(), path.trim().to_string()));
            }
            "drop" => spec.drops.push(rest.to_string()),
            _ => return Err(format!("line {at}: unknown directive `{word}`")),
        }
    }
    if spec.files.is_empty() {
        return Err("no `file` line".into());
    }
    Ok(spec)
}

/// The skeleton's files: (crate path, text), generated from the lessons under `root`.
pub fn generate(root: &Path, spec: &Spec) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut gaps_used = Vec::new();
    let mut drops_used = vec![0usize; spec.drops.len()];
    for (from, to) in &spec.files {
        let source =
            std::fs::read_to_string(root.join(from)).map_err(|e| format!("{from}: {e}"))?;
        let found = regions::parse(&source).map_err(|e| format!("{from}: {e}"))?;
        let lines: Vec<&str> = source.lines().collect();
        // 1. The gaps: each region's lines, markers included, become its replacement.
        let mut cut: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let gap = regions::marker(lines[i])
                .filter(|(_, end)| !end)
                .and_then(|(name, _)| spec.gaps.get_key_value(name));
            if let Some((name, body)) = gap {
                let region = &found[name.as_str()];
                // The region's first line of code sets the indentation (a marker line
                // itself may sit elsewhere, after a trailing comment).
                let indent = lines[i + 1..region.close]
                    .iter()
                    .find(|l| !l.trim().is_empty() && regions::marker(l).is_none())
                    .map_or(indent_of(lines[i]), |l| indent_of(l));
                for line in body {
                    cut.push(if line.is_empty() {
                        String::new()
                    } else {
                        format!("{indent}{line}")
                    });
                }
                gaps_used.push(name.clone());
                i = region.close + 1;
                continue;
            }
            if regions::marker(lines[i]).is_none() {
                cut.push(lines[i].to_string());
            }
            i += 1;
        }
        // 2. The spec's drops, then 3. the mistake branches.
        for (k, drop) in spec.drops.iter().enumerate() {
            while let Some(at) = cut.iter().position(|l| l.trim() == drop) {
                remove_statement(&mut cut, at);
                drops_used[k] += 1;
            }
        }
        let mut cut = unwrap_mistakes(cut).map_err(|e| format!("{from}: {e}"))?;
        // 4. Extra use lines after the last top-level `use … ;`.
        for (file, path) in spec.uses.iter().filter(|(f, _)| f == to) {
            let _ = file;
            let mut at = cut.iter().rposition(|l| l.starts_with("use ")).unwrap_or(0);
            while at < cut.len() && !cut[at].trim_end().ends_with(';') {
                at += 1;
            }
            cut.insert(at + 1, format!("use {path}"));
        }
        if to == "src/main.rs" {
            let at = cut.iter().position(|l| !l.starts_with("//!")).unwrap_or(0);
            let allow = [
                "",
                "// Generated from the lesson by `make exercise-NN`: each todo!() is a call to write.",
                "// Until they are all written, the code after a todo!() is unreachable and some",
                "// imports and helpers are unused: these allows keep the compiler's output to errors.",
                "#![allow(unused, unreachable_code)]",
            ];
            for (k, line) in allow.iter().enumerate() {
                cut.insert(at + k, line.to_string());
            }
        }
        out.push((to.clone(), tidy(cut)));
    }
    for name in spec.gaps.keys() {
        if !gaps_used.contains(name) {
            return Err(format!(
                "gap [{name}]: no such region in the exercise's files"
            ));
        }
    }
    for (drop, used) in spec.drops.iter().zip(drops_used) {
        if used == 0 {
            return Err(format!(
                "drop `{drop}`: no such line in the exercise's files"
            ));
        }
    }
    Ok(out)
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// Removes the statement or item starting at `at`: through its block's closing brace at the
/// same indentation if it opens one, else through the line ending with `;` or `,`. The doc
/// comments, attributes and comments just above it at the same indentation go with it.
fn remove_statement(lines: &mut Vec<String>, at: usize) {
    let indent = indent_of(&lines[at]).to_string();
    let first = lines[at].trim_end();
    let mut end = at;
    if first.trim_start().starts_with("#[") {
        // An attribute alone.
        lines.remove(at);
        return;
    }
    if first.ends_with('{') || first.ends_with('(') {
        end += 1;
        while end < lines.len()
            && !(indent_of(&lines[end]) == indent
                && lines[end].trim_start().starts_with(['}', ')']))
        {
            end += 1;
        }
    } else {
        while end < lines.len() && !lines[end].trim_end().ends_with([';', ',', '}']) {
            end += 1;
        }
    }
    let mut start = at;
    while start > 0 && is_comment_or_attr(&lines[start - 1], &indent) {
        start -= 1;
    }
    lines.drain(start..=end.min(lines.len() - 1));
}

fn is_comment_or_attr(line: &str, indent: &str) -> bool {
    let t = line.trim_start();
    indent_of(line) == indent && (t.starts_with("//") || t.starts_with("#["))
}

/// The mistake branches out (see the module's doc).
fn unwrap_mistakes(lines: Vec<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].replace(" || mistake(", " ||mistake(");
        let line = strip_or_mistake(&line);
        let negated = line.contains("if !mistake(");
        let Some(pos) = line
            .find("if !mistake(")
            .or_else(|| line.find("if mistake("))
        else {
            out.push(line);
            i += 1;
            continue;
        };
        let indent = indent_of(&line).to_string();
        let prefix = line[indent.len()..pos].to_string();
        let close = |from: usize| {
            (from..lines.len())
                .find(|&j| indent_of(&lines[j]) == indent && lines[j].trim_start().starts_with('}'))
                .ok_or_else(|| format!("line `{}`: its block never closes", line.trim()))
        };
        if line.contains("=>") {
            // A match arm guarded by the mistake: the arm goes.
            let end = if line.trim_end().ends_with('{') {
                close(i + 1)?
            } else {
                (i..lines.len())
                    .find(|&j| lines[j].trim_end().ends_with(','))
                    .unwrap_or(i)
            };
            i = end + 1;
            continue;
        }
        if !line.trim_end().ends_with('{') {
            return Err(format!(
                "line `{}`: a mistake branch must open a block",
                line.trim()
            ));
        }
        let j = close(i + 1)?;
        let at_j = lines[j].trim().to_string();
        let (right, naive_end) = match (negated, at_j.as_str()) {
            // if !mistake { right } [else { naive }]
            (true, "}" | "};") => ((i + 1, j), j),
            (true, "} else {") => ((i + 1, j), close(j + 1)?),
            // if mistake { naive } [else { right }]
            (false, "}" | "};") => ((j, j), j),
            (false, "} else {") => {
                let k = close(j + 1)?;
                ((j + 1, k), k)
            }
            (false, _) if at_j.starts_with("} else if ") && prefix.is_empty() => {
                out.push(format!("{indent}if {}", &at_j["} else if ".len()..]));
                i = j + 1;
                continue;
            }
            _ => return Err(format!("line `{}`: unexpected `{at_j}`", line.trim())),
        };
        let body: Vec<&String> = lines[right.0..right.1].iter().collect();
        let suffix = lines[naive_end].trim().trim_start_matches('}').to_string();
        if body.is_empty() {
            if !prefix.is_empty() {
                return Err(format!(
                    "line `{}`: an if-expression needs an else",
                    line.trim()
                ));
            }
            // Nothing right to keep: the branch goes, and its comment lines just above.
            while out.last().is_some_and(|l| is_comment_or_attr(l, &indent)) {
                out.pop();
            }
        } else if prefix.is_empty() {
            for l in &body {
                out.push(l.strip_prefix("    ").unwrap_or(l).to_string());
            }
        } else {
            let code: Vec<&&String> = body
                .iter()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            if code.len() == 1 {
                for l in body.iter().filter(|l| l.trim_start().starts_with("//")) {
                    out.push(format!("{indent}{}", l.trim()));
                }
                // A trailing comment on the value stays after the `;`.
                let value = code[0].trim();
                let (value, comment) = match value.find(" // ") {
                    Some(at) => (&value[..at], &value[at..]),
                    None => (value, ""),
                };
                out.push(format!("{indent}{prefix}{value}{suffix}{comment}"));
            } else {
                out.push(format!("{indent}{prefix}{{"));
                out.extend(body.iter().map(|l| l.to_string()));
                out.push(format!("{indent}}}{suffix}"));
            }
        }
        i = naive_end + 1;
    }
    Ok(out)
}

/// `a || mistake(M)` in a condition: the `|| mistake(M)` goes.
fn strip_or_mistake(line: &str) -> String {
    let Some(at) = line.find(" ||mistake(") else {
        return line.to_string();
    };
    let rest = &line[at + " ||mistake(".len()..];
    let mut depth = 1;
    for (k, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return format!("{}{}", &line[..at], &rest[k + 1..]);
                }
            }
            _ => {}
        }
    }
    line.to_string()
}

/// Joins the lines: no two blank lines in a row, none just before a closing brace.
fn tidy(lines: Vec<String>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in &lines {
        let line = line.trim_end();
        let last_blank = out.last().is_none_or(|l| l.is_empty());
        if line.is_empty() && last_blank {
            continue;
        }
        if line.trim_start().starts_with(['}', ')']) && out.last() == Some(&"") {
            out.pop();
        }
        out.push(line);
    }
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// The learner's Cargo.toml: a crate of its own (its own `[workspace]`, so the project's
/// workspace never builds it) whose binary is `exercise-NN`, with the support crates by
/// `root` (the project's root, relative to the crate or absolute).
pub fn manifest(nn: &str, root: &str) -> String {
    format!(
        "# Your exercise {nn}: `make exercise-{nn}` runs it, `make check-{nn}` checks it.\n\
         [package]\nname = \"exercise-{nn}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [[bin]]\nname = \"exercise-{nn}\"\npath = \"src/main.rs\"\n\n\
         [dependencies]\n\
         clap = {{ version = \"4.6\", features = [\"derive\", \"string\"] }}\n\
         libc = \"0.2\"\n\
         nix = {{ version = \"0.32\", features = [\"socket\", \"net\", \"poll\", \"fs\", \"signal\", \"process\", \"resource\", \"uio\", \"event\", \"sched\", \"zerocopy\"] }}\n\
         protocols = {{ path = \"{root}/protocols\" }}\n\
         signal-hook = \"0.4\"\n\
         sockets-by-hand = {{ path = \"{root}\" }}\n\n\
         [workspace]\n\n\
         [profile.release]\ndebug = \"line-tables-only\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own per call: the tests run in parallel in one process.
    fn scratch() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("skel-{}-{n}", std::process::id()))
    }

    fn run(src: &str, spec: &str) -> String {
        let dir = scratch();
        std::fs::create_dir_all(dir.join("lessons")).unwrap();
        std::fs::write(dir.join("lessons/x.rs"), src).unwrap();
        let spec = parse_spec(&format!("file lessons/x.rs src/x.rs\n{spec}")).unwrap();
        let out = generate(&dir, &spec);
        std::fs::remove_dir_all(&dir).unwrap();
        out.unwrap().remove(0).1
    }

    #[test]
    fn a_gap_replaces_its_region_and_markers_go() {
        let src = "fn main() {\n    // [accept]\n    let c = accept(&l);\n    // [doc]\n    x();\n    // [/doc]\n    // [/accept]\n    // [keep]\n    y();\n    // [/keep]\n}\n";
        let out = run(src, "gap accept\n    let c = todo!(\"accept(2)\");\n");
        assert_eq!(
            out,
            "fn main() {\n    let c = todo!(\"accept(2)\");\n    y();\n}\n"
        );
    }

    #[test]
    fn mistake_branches_leave_the_right_code() {
        let src = "fn f() {\n    // The mistake, said.\n    if mistake(M::A) {\n        wrong();\n    }\n    if !mistake(M::B) {\n        // right\n        right();\n    } else {\n        wrong();\n    }\n    let x = if !mistake(M::C) {\n        // two\n        2\n    } else {\n        1\n    };\n    if !mistake(M::E) {\n        kept();\n    }\n    match r {\n        Err(_) if mistake(M::F) => 0,\n        Ok(n) if n > 0 || mistake(M::G) => n,\n    }\n}\n";
        let out = run(src, "");
        let want = "fn f() {\n    // right\n    right();\n    // two\n    let x = 2;\n    kept();\n    match r {\n        Ok(n) if n > 0 => n,\n    }\n}\n";
        assert_eq!(out, want);
    }

    #[test]
    fn drops_take_their_doc_and_block_and_a_stale_drop_is_an_error() {
        let src = "struct A {\n    x: u8,\n\n    /// Doc.\n    #[arg(long)]\n    mistake: Option<M>,\n}\n\nm! {\n    A,\n}\n\nfn f() {}\n";
        let out = run(src, "drop mistake: Option<M>,\ndrop m! {\n");
        assert_eq!(out, "struct A {\n    x: u8,\n}\n\nfn f() {}\n");
        let dir = scratch();
        std::fs::create_dir_all(dir.join("lessons")).unwrap();
        std::fs::write(dir.join("lessons/x.rs"), src).unwrap();
        let spec =
            parse_spec("file lessons/x.rs src/x.rs\ndrop gone();\ngap nope\n    x\n").unwrap();
        let err = generate(&dir, &spec).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("[nope]"), "{err}");
    }
}
