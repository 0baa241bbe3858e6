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
use std::path::{Component, Path, PathBuf};

use crate::regions;

/// One exercise's spec, parsed.
#[derive(Debug, Default, Clone)]
pub struct Spec {
    /// (lesson file relative to the root, its path in the learner's crate): the crate root
    /// (`src/main.rs`) and the files with gaps. Every other module is mounted from the lesson.
    pub files: Vec<(String, String)>,
    /// Region name → the lines that replace it (indented relative to the region).
    pub gaps: BTreeMap<String, Vec<String>>,
    /// (crate file, use path) for extra `use` lines.
    pub uses: Vec<(String, String)>,
    /// Lines (trimmed) to drop, with their block or statement: in every file (None) or in
    /// one crate file (`drop-in`).
    pub drops: Vec<(Option<String>, String)>,
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
            "drop" => spec.drops.push((None, rest.to_string())),
            "drop-in" => {
                let (file, line) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("line {at}: drop-in CRATE-FILE LINE"))?;
                spec.drops
                    .push((Some(file.to_string()), line.trim().to_string()));
            }
            _ => return Err(format!("line {at}: unknown directive `{word}`")),
        }
    }
    if !spec.files.iter().any(|(_, to)| to == "src/main.rs") {
        return Err("no `file LESSON src/main.rs` line".into());
    }
    Ok(spec)
}

/// How to generate: for which exercise, where the lessons are seen from the crate's src/
/// (`../../..` from exercises/NN/src/ and my-exercises/NN/src/, or an absolute path), and
/// whether the gaps are left as the lesson has them (a test's solved crate).
pub struct Options<'a> {
    pub nn: &'a str,
    pub root_from_src: &'a str,
    pub solved: bool,
}

/// One generated file of the crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Its path in the crate (`src/flow.rs`).
    pub path: String,
    pub text: String,
    /// It has gaps: tracked under exercises/NN/ (the crate root without gaps is generated
    /// into the learner's crate only).
    pub has_gaps: bool,
}

/// The skeleton's files, generated from the lessons under `root`: each file of the spec
/// with its gaps cut out, and the crate root; every other module of the lesson is mounted
/// from the lesson by `#[path]`.
pub fn generate(root: &Path, spec: &Spec, opt: &Options) -> Result<Vec<Generated>, String> {
    let mut out = Vec::new();
    let mut gaps_used = Vec::new();
    let mut drops_used = vec![0usize; spec.drops.len()];
    for (from, to) in &spec.files {
        let source =
            std::fs::read_to_string(root.join(from)).map_err(|e| format!("{from}: {e}"))?;
        let found = regions::parse(&source).map_err(|e| format!("{from}: {e}"))?;
        let has_gaps = spec.gaps.keys().any(|g| found.contains_key(g));
        if !has_gaps && to != "src/main.rs" {
            return Err(format!(
                "file {from}: no gap in it; a file without gaps is mounted from the lesson, \
                 drop its `file` line"
            ));
        }
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
                gaps_used.push(name.clone());
                if opt.solved {
                    i += 1;
                    continue;
                }
                // The region's first line of code sets the indentation (a marker line
                // itself may sit elsewhere, after a trailing comment).
                let indent = lines[i + 1..region.close]
                    .iter()
                    .find(|l| !l.trim().is_empty() && regions::marker(l).is_none())
                    .map_or(indent_of(lines[i]), |l| indent_of(l));
                for line in body {
                    check_named_code(name, line, &region.text)?;
                    cut.push(if line.is_empty() {
                        String::new()
                    } else {
                        format!("{indent}{line}")
                    });
                }
                i = region.close + 1;
                continue;
            }
            if regions::marker(lines[i]).is_none() {
                cut.push(lines[i].to_string());
            }
            i += 1;
        }
        // 2. The spec's drops, then 3. the mistake branches and what their comments say.
        for (k, (only, drop)) in spec.drops.iter().enumerate() {
            if only.as_ref().is_some_and(|f| f != to) {
                continue;
            }
            while let Some(at) = cut.iter().position(|l| l.trim() == drop) {
                remove_statement(&mut cut, at);
                drops_used[k] += 1;
            }
        }
        let cut = unwrap_mistakes(cut).map_err(|e| format!("{from}: {e}"))?;
        let mut cut = scrub_mistake_comments(cut);
        // 4. Extra use lines after the last top-level `use … ;`.
        for (_, path) in spec.uses.iter().filter(|(f, _)| f == to) {
            let mut at = cut.iter().rposition(|l| l.starts_with("use ")).unwrap_or(0);
            while at < cut.len() && !cut[at].trim_end().ends_with(';') {
                at += 1;
            }
            cut.insert(at + 1, format!("use {path}"));
        }
        // 5. Modules: the spec's files stay the crate's, the rest are the lesson's own.
        let cut = mount_modules(root, cut, from, to, spec, opt.root_from_src)?;
        let mut text = Vec::new();
        let nn = opt.nn;
        text.push(if has_gaps {
            format!("// Generated from {from} by exercises/{nn}/exercise.txt: write its todo!()s.")
        } else {
            format!(
                "// Generated from {from} by exercises/{nn}/exercise.txt: the lesson's, wired \
                 to your files."
            )
        });
        text.extend(cut);
        if to == "src/main.rs" {
            let at = text
                .iter()
                .position(|l| !l.starts_with("//"))
                .unwrap_or(text.len());
            let head = crate_head(nn);
            for (k, line) in head.lines().enumerate() {
                text.insert(at + k, line.to_string());
            }
        }
        out.push(Generated {
            path: to.clone(),
            text: tidy(text),
            has_gaps,
        });
    }
    for name in spec.gaps.keys() {
        if !gaps_used.contains(name) {
            return Err(format!(
                "gap [{name}]: no such region in the exercise's files"
            ));
        }
    }
    for ((_, drop), used) in spec.drops.iter().zip(drops_used) {
        if used == 0 {
            return Err(format!(
                "drop `{drop}`: no such line in the exercise's files"
            ));
        }
    }
    Ok(out)
}

/// What the crate root says after the lesson's header: the allows, and the crate's own
/// `todo!`, which stops the program with one line naming the call (no panic, no backtrace,
/// whatever RUST_BACKTRACE says; async-signal-safe, so a todo!() in a signal handler or a
/// forked child ends the same way).
fn crate_head(nn: &str) -> String {
    format!(
        r#"
// Until every todo!() is written, the code after one is unreachable and some imports and
// helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

/// A call still to write. Reached, it prints one line naming the call and where it stands,
/// then ends the program (exit status 101); `make check-{nn}` quotes that line.
macro_rules! todo {{
    ($call:literal) => {{{{
        let line = concat!("todo!() reached at ", file!(), ":", line!(), ": ", $call, "\n");
        // SAFETY: write(2) and _exit(2) on a valid buffer; both are async-signal-safe.
        unsafe {{
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(101)
        }}
    }}}};
}}
"#
    )
}

/// A gap's sentence names code in backticks as the learner must write it (`&*x`,
/// `.as_ref()`): each such piece must stand in the region it replaces, so that it compiles
/// where the lesson's does.
fn check_named_code(gap: &str, line: &str, region: &str) -> Result<(), String> {
    let squeeze = |t: &str| t.split_whitespace().collect::<String>();
    let region = squeeze(region);
    for (k, piece) in line.split('`').enumerate() {
        if k % 2 == 1 && !region.contains(&squeeze(&piece.replace("\\\"", "\""))) {
            return Err(format!(
                "gap [{gap}]: its todo names `{piece}`, which the lesson's region does not have"
            ));
        }
    }
    Ok(())
}

/// `dir/rel`, with `.` and `..` resolved (the lessons' paths have no symlinks to follow).
fn join_normal(dir: &Path, rel: &str) -> String {
    let mut out = PathBuf::new();
    for part in dir.join(rel).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// Rewrites each `mod NAME;` of a generated file: a module whose lesson file the spec
/// lists is the crate's own file; any other is mounted from the lesson with `#[path]`.
fn mount_modules(
    root: &Path,
    lines: Vec<String>,
    from: &str,
    to: &str,
    spec: &Spec,
    root_from_src: &str,
) -> Result<Vec<String>, String> {
    let from_path = Path::new(from);
    let dir = from_path.parent().unwrap_or(Path::new(""));
    let is_root = to == "src/main.rs" || from_path.ends_with("mod.rs");
    let mut out: Vec<String> = Vec::new();
    let mut noted = false;
    for line in lines {
        let t = line.trim();
        let name = t
            .strip_prefix("mod ")
            .or_else(|| t.strip_prefix("pub mod "))
            .and_then(|r| r.strip_suffix(';'))
            .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'));
        let Some(name) = name else {
            out.push(line);
            continue;
        };
        let attr = out
            .last()
            .and_then(|l| l.trim().strip_prefix("#[path = \""))
            .and_then(|l| l.strip_suffix("\"]"))
            .map(str::to_string);
        let lesson_file = match &attr {
            Some(rel) => join_normal(dir, rel),
            None if is_root => join_normal(dir, &format!("{name}.rs")),
            None => {
                let stem = from_path.file_stem().unwrap_or_default().to_string_lossy();
                join_normal(&dir.join(&*stem), &format!("{name}.rs"))
            }
        };
        if attr.is_some() {
            out.pop();
        }
        let indent = indent_of(&line).to_string();
        if let Some((_, crate_file)) = spec.files.iter().find(|(f, _)| *f == lesson_file) {
            if crate_file != &format!("src/{name}.rs") {
                let file = crate_file.trim_start_matches("src/");
                out.push(format!("{indent}#[path = \"{file}\"]"));
            }
        } else {
            if !root.join(&lesson_file).is_file() {
                return Err(format!("{from}: mod {name}: no file {lesson_file}"));
            }
            if !noted {
                out.push(format!(
                    "{indent}// Mounted from the lesson as they are (no todo!() in them): read them there."
                ));
                noted = true;
            }
            out.push(format!(
                "{indent}#[path = \"{root_from_src}/{lesson_file}\"]"
            ));
        }
        out.push(line);
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
            // A match arm guarded by the mistake: the arm goes, and the comment above it.
            while out.last().is_some_and(|l| is_comment_or_attr(l, &indent)) {
                out.pop();
            }
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

/// A plain `//` comment line (not `///` or `//!`).
fn is_plain_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") && !t.starts_with("///") && !t.starts_with("//!")
}

/// Where `text` speaks of a mistake (`--mistake`, "The mistake", "MISTAKE ON"), not of
/// being "mistaken".
fn mention(text: &str) -> Option<usize> {
    let lower = text.to_lowercase();
    lower
        .match_indices("mistake")
        .map(|(at, _)| at)
        .find(|&at| !lower[at + 7..].starts_with('n'))
}

/// A comment block that speaks of a mistake (whose branch is cut out) loses the sentence
/// that does and everything after it in the block; what comes before stays. So
/// "…restarted at once. `--mistake no-reuseaddr` leaves it out: …" keeps its first sentence.
fn scrub_mistake_comments(lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !is_plain_comment(&lines[i]) {
            out.push(lines[i].clone());
            i += 1;
            continue;
        }
        let indent = indent_of(&lines[i]).to_string();
        let mut j = i;
        while j < lines.len() && is_plain_comment(&lines[j]) && indent_of(&lines[j]) == indent {
            j += 1;
        }
        let texts: Vec<&str> = lines[i..j]
            .iter()
            .map(|l| l.trim_start()[2..].trim_start())
            .collect();
        let joined = texts.join("\n");
        match mention(&joined) {
            None => out.extend(lines[i..j].iter().cloned()),
            Some(at) => {
                let before = &joined[..at];
                let start = before
                    .rfind(". ")
                    .max(before.rfind(".\n"))
                    .map_or(0, |p| p + 1);
                for kept in joined[..start].lines() {
                    out.push(format!("{indent}// {}", kept.trim_end()));
                }
            }
        }
        i = j;
    }
    out
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
    while out.last() == Some(&"") {
        out.pop();
    }
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// The learner's Cargo.toml: a crate of its own (its own `[workspace]`, so the project's
/// workspace never builds it) whose binary is `exercise-NN`, with the support crates by
/// `root` (the project's root, relative to the crate or absolute).
pub fn manifest(nn: &str, root: &str) -> String {
    format!(
        "# Generated by `make exercise-{nn}`: your exercise {nn}; `make exercise-{nn}` runs it, `make check-{nn}` checks it.\n\
         [package]\nname = \"exercise-{nn}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [[bin]]\nname = \"exercise-{nn}\"\npath = \"src/main.rs\"\n\n\
         [dependencies]\n\
         clap = {{ version = \"4.6\", features = [\"derive\", \"string\"] }}\n\
         io-uring = \"0.7\"\n\
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
        let spec = parse_spec(&format!("file lessons/x.rs src/main.rs\n{spec}")).unwrap();
        let opt = Options {
            nn: "00",
            root_from_src: "../../..",
            solved: false,
        };
        let out = generate(&dir, &spec, &opt);
        std::fs::remove_dir_all(&dir).unwrap();
        let text = out.unwrap().remove(0).text;
        // The generated first line and the crate's head (its allows and its todo!) aside.
        assert!(text.starts_with("// Generated from lessons/x.rs by exercises/00/exercise.txt"));
        text.split_once("\n}\n").unwrap().1.to_string()
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
    fn a_mistakes_comment_goes_with_its_branch_and_the_rest_stays() {
        let src = "fn f() {\n    match r {\n        // The mistake: one EOF ends both ways.\n        _ if mistake(M::A) => 0,\n        // The right arm.\n        Ok(n) => n,\n    }\n    // Bind at once. `--mistake b` leaves it\n    // out: a restart fails.\n    if !mistake(M::B) {\n        bind();\n    }\n}\n";
        let out = run(src, "");
        let want = "fn f() {\n    match r {\n        // The right arm.\n        Ok(n) => n,\n    }\n    // Bind at once.\n    bind();\n}\n";
        assert_eq!(out, want);
    }

    #[test]
    fn code_a_todo_names_must_stand_in_its_region() {
        let region = "bind(listener.as_raw_fd(), net::sockaddr(addr).as_ref()).or_die(\"bind\");\n";
        let good =
            "todo!(\"bind(2): `net::sockaddr(addr).as_ref()` and `.or_die(\\\"bind\\\")`\");";
        assert_eq!(check_named_code("bind", good, region), Ok(()));
        let bad = "todo!(\"bind(2): `&net::sockaddr(addr)`\");";
        let err = check_named_code("bind", bad, region).unwrap_err();
        assert!(err.contains("`&net::sockaddr(addr)`"), "{err}");
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
            parse_spec("file lessons/x.rs src/main.rs\ndrop gone();\ngap nope\n    x\n").unwrap();
        let opt = Options {
            nn: "00",
            root_from_src: "../../..",
            solved: false,
        };
        let err = generate(&dir, &spec, &opt).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("[nope]"), "{err}");
    }
}
