//! The lesson index, lessons/lessons.toml: what each lesson is (port, strace filter,
//! provocations, taught calls, exercise), read into [`Index`]; and each lesson's title, read
//! from the first line of its header (`//! Lesson NN — Title.`), its one home.
//!
//! The file is a strict subset of TOML (its own top comment says which), so that the
//! Makefile's awk reads it too; this reader refuses anything outside the subset, with the
//! line, rather than guessing.

use std::fs;
use std::path::{Path, PathBuf};

/// One `[lesson.NN]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    /// "03".
    pub number: String,
    /// The default port (`lesson!(PORT, ...)` in its main file).
    pub port: u16,
    /// strace's `-e trace=` list as written: `%default` and `%NN` not yet expanded
    /// ([`Index::trace`] expands them).
    pub trace: String,
    /// The kinds `make provoke-NN` runs, `kind+arg+arg` each.
    pub provoke: Vec<String>,
    /// The taught calls as Rust spells them; each inner list holds a call's alternative
    /// spellings (`"accept(|accept4("` in the file).
    pub calls: Vec<Vec<String>>,
    /// The exercise's title, where the lesson has an exercise.
    pub exercise: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// `[default]`'s trace: the common strace filter.
    pub default_trace: String,
    /// The lessons, in order.
    pub lessons: Vec<Lesson>,
}

/// lessons/lessons.toml under the project's root.
pub fn index_path(root: &Path) -> PathBuf {
    root.join("lessons").join("lessons.toml")
}

impl Index {
    /// Reads and parses lessons/lessons.toml under `root`.
    pub fn load(root: &Path) -> Result<Index, String> {
        let path = index_path(root);
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Index::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Lesson `number` ("03"), if the index has it.
    pub fn lesson(&self, number: &str) -> Option<&Lesson> {
        self.lessons.iter().find(|l| l.number == number)
    }

    /// Lesson `number`'s strace filter with `%default` and `%NN` expanded, as the Makefile's
    /// TRACE_NN holds it.
    pub fn trace(&self, number: &str) -> Result<String, String> {
        let lesson = self
            .lesson(number)
            .ok_or_else(|| format!("no lesson {number}"))?;
        self.expand(&lesson.trace, 0)
    }

    fn expand(&self, filter: &str, depth: usize) -> Result<String, String> {
        if depth > self.lessons.len() + 1 {
            return Err(format!("trace references loop: {filter}"));
        }
        let mut out: Vec<String> = Vec::new();
        for token in filter.split(',') {
            let expanded = match token.strip_prefix('%') {
                Some("default") => self.expand(&self.default_trace, depth + 1)?,
                Some(nn) if is_number(nn) => {
                    let other = self
                        .lesson(nn)
                        .ok_or_else(|| format!("trace names %{nn}: no lesson {nn}"))?;
                    self.expand(&other.trace, depth + 1)?
                }
                _ => token.to_string(),
            };
            out.push(expanded);
        }
        Ok(out.join(","))
    }
}

fn is_number(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A value as the subset allows.
#[derive(Debug)]
enum Value {
    Int(u64),
    Str(String),
    Array(Vec<String>),
}

impl Index {
    /// Parses the subset. Errors read `LINE: what`.
    pub fn parse(text: &str) -> Result<Index, String> {
        enum Table {
            None,
            Default,
            Lesson(usize),
        }
        let mut default_trace = None;
        let mut lessons: Vec<Lesson> = Vec::new();
        // Keys seen in the current table, to refuse a repeated one.
        let mut seen: Vec<String> = Vec::new();
        // The lessons whose table names a port (0 is a port too: a lesson that listens on none).
        let mut with_port: Vec<usize> = Vec::new();
        let mut table = Table::None;
        let mut default_seen = false;
        let mut lines = text.lines().enumerate();
        while let Some((i, raw)) = lines.next() {
            let at = i + 1;
            let line = strip_comment(raw, at)?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                let name = header
                    .strip_suffix(']')
                    .ok_or_else(|| format!("{at}: a table header is `[name]`"))?;
                seen.clear();
                if name == "default" {
                    if default_seen {
                        return Err(format!("{at}: [default] twice"));
                    }
                    default_seen = true;
                    table = Table::Default;
                } else if let Some(nn) = name.strip_prefix("lesson.").filter(|n| is_number(n)) {
                    if let Some(last) = lessons.last() {
                        if last.number.as_str() >= nn {
                            return Err(format!(
                                "{at}: [lesson.{nn}] after [lesson.{}]: in order, once each",
                                last.number
                            ));
                        }
                    }
                    lessons.push(Lesson {
                        number: nn.to_string(),
                        port: 0,
                        trace: String::new(),
                        provoke: Vec::new(),
                        calls: Vec::new(),
                        exercise: None,
                    });
                    table = Table::Lesson(lessons.len() - 1);
                } else {
                    return Err(format!(
                        "{at}: unknown table [{name}] ([default] or [lesson.NN])"
                    ));
                }
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("{at}: expected `key = value`"))?;
            let key = key.trim();
            let mut value = value.trim().to_string();
            // An array may run over several lines, up to the one that closes it.
            if value.starts_with('[') {
                while !value.ends_with(']') {
                    let (j, more) = lines
                        .next()
                        .ok_or_else(|| format!("{at}: array `{key}` never closed"))?;
                    value.push(' ');
                    value.push_str(strip_comment(more, j + 1)?.trim());
                }
            }
            let value = parse_value(&value).map_err(|e| format!("{at}: {key}: {e}"))?;
            if seen.iter().any(|k| k == key) {
                return Err(format!("{at}: {key} twice in one table"));
            }
            seen.push(key.to_string());
            if let (Table::Lesson(n), "port") = (&table, key) {
                with_port.push(*n);
            }
            match (&table, key, value) {
                (Table::None, ..) => return Err(format!("{at}: `{key}` outside a table")),
                (Table::Default, "trace", Value::Str(s)) => default_trace = Some(s),
                (Table::Lesson(n), key, value) => set(&mut lessons[*n], key, value)
                    .map_err(|e| format!("{at}: [lesson.{}] {e}", lessons[*n].number))?,
                (Table::Default, key, value) => {
                    return Err(format!(
                        "{at}: [default] takes `trace = \"...\"` only, not {key} = {value:?}"
                    ))
                }
            }
        }
        let default_trace = default_trace.ok_or("no [default] trace")?;
        for (n, lesson) in lessons.iter().enumerate() {
            let missing: Vec<&str> = [
                ("port", !with_port.contains(&n)),
                ("trace", lesson.trace.is_empty()),
                ("calls", lesson.calls.is_empty()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "[lesson.{}] lacks {}",
                    lesson.number,
                    missing.join(", ")
                ));
            }
        }
        let index = Index {
            default_trace,
            lessons,
        };
        for lesson in &index.lessons {
            index.trace(&lesson.number)?;
        }
        Ok(index)
    }
}

/// A lesson's key.
fn set(lesson: &mut Lesson, key: &str, value: Value) -> Result<(), String> {
    match (key, value) {
        ("port", Value::Int(p)) => {
            lesson.port = u16::try_from(p)
                .ok()
                .ok_or(format!("port {p} is not 0-65535"))?
        }
        ("trace", Value::Str(s)) if !s.is_empty() => lesson.trace = s,
        ("provoke", Value::Array(kinds)) => lesson.provoke = kinds,
        ("calls", Value::Array(calls)) => {
            lesson.calls = calls
                .iter()
                .map(|c| c.split('|').map(str::to_string).collect::<Vec<_>>())
                .collect();
            if lesson.calls.iter().flatten().any(String::is_empty) {
                return Err("calls: an empty spelling".into());
            }
        }
        ("exercise", Value::Str(s)) if !s.is_empty() => lesson.exercise = Some(s),
        (key, value) => {
            return Err(format!(
                "{key} = {value:?}: the keys are port (integer), trace (string), provoke and \
                 calls (arrays of strings), exercise (string)"
            ))
        }
    }
    Ok(())
}

/// `raw` up to its comment: a `#` outside a string. A `"`-string never holds `#` (nor `"`),
/// so the first `#` after an even count of quotes starts the comment.
fn strip_comment(raw: &str, at: usize) -> Result<&str, String> {
    let mut quotes = 0;
    for (i, c) in raw.char_indices() {
        match c {
            '"' => quotes += 1,
            '#' if quotes % 2 == 0 => return Ok(&raw[..i]),
            '#' => return Err(format!("{at}: `#` inside a string")),
            '\\' => return Err(format!("{at}: no backslashes in this file")),
            _ => {}
        }
    }
    if quotes % 2 == 1 {
        return Err(format!("{at}: a string is not closed on its line"));
    }
    Ok(raw)
}

fn parse_value(text: &str) -> Result<Value, String> {
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("array not closed")?;
        let mut items = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let (item, after) = string(rest)?;
            items.push(item);
            rest = after.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("expected `,` before `{rest}`")),
            }
        }
        return Ok(Value::Array(items));
    }
    if text.starts_with('"') {
        let (s, rest) = string(text)?;
        if !rest.trim().is_empty() {
            return Err(format!("`{}` after the string", rest.trim()));
        }
        return Ok(Value::Str(s));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Value::Int)
            .map_err(|e| format!("{text}: {e}"));
    }
    Err(format!(
        "`{text}` is none of an integer, a \"string\", [\"an\", \"array\"]"
    ))
}

/// The `"..."` at the start of `text`, and what follows it.
fn string(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| format!("expected a \"string\" at `{text}`"))?;
    let end = body.find('"').ok_or("a string is not closed")?;
    Ok((body[..end].to_string(), &body[end + 1..]))
}

/// lessons/NN-topic.rs, or lessons/NN-topic/main.rs: the file with lesson `number`'s header.
pub fn main_file(root: &Path, number: &str) -> Result<PathBuf, String> {
    let dir = root.join("lessons");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{number}-"))
                && (name.ends_with(".rs") || p.join("main.rs").is_file())
        })
        .collect();
    match found.len() {
        1 => {
            let path = found.pop().unwrap_or_default();
            Ok(if path.is_dir() {
                path.join("main.rs")
            } else {
                path
            })
        }
        0 => Err(format!(
            "no lessons/{number}-*.rs or lessons/{number}-*/main.rs"
        )),
        _ => Err(format!("lesson {number}: more than one of {found:?}")),
    }
}

/// The numbers of the lessons present under lessons/ (a file or folder named `NN-topic`).
pub fn present(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("lessons");
    let mut numbers: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let (nn, _) = name.split_once('-')?;
            is_number(nn).then(|| nn.to_string())
        })
        .collect();
    numbers.sort();
    Ok(numbers)
}

/// The title in `header`'s first line: `//! Lesson 03 — interactive echo.` → `interactive echo`.
pub fn title_of(number: &str, header: &str) -> Result<String, String> {
    let first = header.lines().next().unwrap_or("");
    let prefix = format!("//! Lesson {number} — ");
    let title = first
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("lesson {number}: first line {first:?} is not `{prefix}Title.`"))?;
    let title = title.strip_suffix('.').unwrap_or(title).trim();
    if title.is_empty() {
        return Err(format!("lesson {number}: an empty title"));
    }
    Ok(title.to_string())
}

/// Lesson `number`'s title, from its header.
pub fn title(root: &Path, number: &str) -> Result<String, String> {
    let path = main_file(root, number)?;
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    title_of(number, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# a comment
[default]
trace = "%network,read,write"   # trailing comment

[lesson.01]
port = 23333
trace = "socket,accept"
provoke = ["restart"]
calls = ["socket(", "accept(|accept4("]
exercise = "hello, one client"

[lesson.02]
port = 1080
trace = "%01,read"
provoke = []
calls = [
    "poll(", # what it waits in
    "read(",
]

[lesson.03]
port = 1
trace = "%default,%02,splice"
provoke = ["many+20", "split"]
calls = ["x"]
"#;

    #[test]
    fn reads_the_subset() {
        let index = Index::parse(SAMPLE).unwrap();
        assert_eq!(index.default_trace, "%network,read,write");
        assert_eq!(index.lessons.len(), 3);
        let one = index.lesson("01").unwrap();
        assert_eq!(one.port, 23333);
        assert_eq!(one.provoke, ["restart"]);
        assert_eq!(one.calls, [vec!["socket("], vec!["accept(", "accept4("]]);
        assert_eq!(one.exercise.as_deref(), Some("hello, one client"));
        let two = index.lesson("02").unwrap();
        assert_eq!(two.port, 1080);
        assert!(two.provoke.is_empty());
        assert_eq!(two.calls, [vec!["poll("], vec!["read("]]);
        assert_eq!(two.exercise, None);
    }

    #[test]
    fn expands_default_and_other_lessons() {
        let index = Index::parse(SAMPLE).unwrap();
        assert_eq!(index.trace("01").unwrap(), "socket,accept");
        assert_eq!(index.trace("02").unwrap(), "socket,accept,read");
        assert_eq!(
            index.trace("03").unwrap(),
            "%network,read,write,socket,accept,read,splice"
        );
        assert!(index.trace("04").is_err());
    }

    fn error(text: &str) -> String {
        Index::parse(text).expect_err(text)
    }

    #[test]
    fn refuses_what_is_outside_the_subset() {
        let head = "[default]\ntrace = \"read\"\n";
        let lesson = |body: &str| format!("{head}[lesson.01]\n{body}");
        let full = "port = 1\ntrace = \"read\"\ncalls = [\"read(\"]\n";
        assert!(Index::parse(&lesson(full)).is_ok());
        assert!(error(&lesson("port = 1\ntrace = \"read\"\n")).contains("lacks calls"));
        assert!(error(&lesson(&format!("{full}port = 2\n"))).contains("port twice"));
        assert!(error(&lesson(&format!("{full}title = \"x\"\n"))).contains("title"));
        assert!(error(&lesson(&format!("{full}exercise = 3\n"))).contains("exercise"));
        assert!(error(&lesson("port = 70000\n")).contains("not 0-65535"));
        assert!(error(&lesson("port = 0x10\n")).contains("none of"));
        assert!(error(&lesson("trace = 'read'\n")).contains("none of"));
        assert!(error(&lesson("trace = \"a\\\"b\"\n")).contains("backslash"));
        assert!(error(&lesson("trace = \"a#b\"\n")).contains("inside a string"));
        assert!(error(&lesson("trace = \"read\n")).contains("not closed"));
        assert!(error(&lesson("calls = [\"a\" \"b\"]\n")).contains("expected `,`"));
        assert!(error(&lesson("calls = [\"a\",\n")).contains("never closed"));
        assert!(error(&lesson("calls = [\"a||b\"]\n")).contains("empty spelling"));
        assert!(error(&lesson("calls = [1]\n")).contains("string"));
        assert!(error(&format!("{head}[lesson.1]\n")).contains("unknown table"));
        assert!(error(&format!("{head}[lessons.01]\n")).contains("unknown table"));
        assert!(error(&format!("{head}[default]\n")).contains("twice"));
        assert!(error(&format!("{head}[default\n")).contains("table header"));
        assert!(error("trace = \"read\"\n").contains("outside a table"));
        assert!(error("[lesson.01]\n").contains("no [default]"));
        assert!(error(&format!("{head}port = 1\n")).contains("[default] takes"));
        assert!(error(&format!("{head}just words\n")).contains("key = value"));
        // In order, once each.
        let two = format!("{head}[lesson.02]\n{full}[lesson.01]\n{full}");
        assert!(error(&two).contains("in order"));
        let twice = format!("{head}[lesson.01]\n{full}[lesson.01]\n{full}");
        assert!(error(&twice).contains("in order"));
        // A reference to a lesson that is not there, and a loop.
        let dangling = format!("{head}[lesson.01]\nport = 1\ntrace = \"%07\"\ncalls = [\"a\"]\n");
        assert!(error(&dangling).contains("no lesson 07"));
        let looped = format!("{head}[lesson.01]\nport = 1\ntrace = \"%01\"\ncalls = [\"a\"]\n");
        assert!(error(&looped).contains("loop"));
    }

    #[test]
    fn titles_come_from_the_first_header_line() {
        let header = "//! Lesson 03 — interactive reverse echo.\n//!\n//! More.\n";
        assert_eq!(title_of("03", header).unwrap(), "interactive reverse echo");
        assert!(title_of("04", header).is_err());
        assert!(title_of("03", "//! Lesson 03 - dash.\n").is_err());
        assert!(title_of("03", "//! Lesson 03 — .\n").is_err());
        assert!(title_of("03", "").is_err());
    }

    #[test]
    fn the_projects_own_index_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("a parent")
            .to_path_buf();
        let index = Index::load(&root).unwrap();
        assert!(index.lessons.len() >= 16, "{} lessons", index.lessons.len());
        for lesson in &index.lessons {
            let trace = index.trace(&lesson.number).unwrap();
            assert!(!trace.contains("%default"), "{trace}");
            title(&root, &lesson.number).unwrap();
        }
    }
}
