//! The docs keep their shape, so that a newcomer finds the same things in the same places:
//! - README.md is a front page: at most 200 lines, no table row over 160 characters, a row
//!   and a docs page for every lesson, and a link to every page under docs/;
//! - every lesson page has the same sections, in the same order;
//! - the pages that explain things once (docs/conventions.md, docs/lessons/README.md) exist,
//!   and the table of who mounts what in docs/lessons/README.md is the lessons' `#[path]`s;
//! - the pages outside docs/lessons/ (docs/*.md, ARCHITECTURE.md, CONTRIBUTING.md) name only
//!   code and source paths that exist, and a `lessons/FILE.rs:N text` quote there quotes line N
//!   (README.md and docs/lessons/ are exercises/tests/docs.rs's);
//! - the repository speaks of itself alone: no tracked source or page tells how it was made.
//!
//! std only: it reads files and runs `git ls-files`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sections of a lesson page, in order; the last may be left out when it would be empty.
const SECTIONS: &[&str] = &[
    "What it shows",
    "Run it",
    "The calls",
    "What the trace shows",
    "The mistakes, switched on",
    "Exercise",
    "Going further",
];
const OPTIONAL: &str = "Going further";

const README_LINES: usize = 200;
const ROW_CHARS: usize = 160;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The lessons' numbers, from lessons/NN-topic.rs and lessons/NN-topic/.
fn lesson_numbers() -> Vec<String> {
    let mut numbers: Vec<String> = fs::read_dir(root().join("lessons"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let nn = name.get(..3)?;
            (nn.ends_with('-') && nn[..2].chars().all(|c| c.is_ascii_digit()))
                .then(|| nn[..2].to_string())
        })
        .collect();
    numbers.sort();
    numbers.dedup();
    numbers
}

/// docs/lessons/NN-topic.md, if there is one.
fn lesson_page(nn: &str) -> Option<PathBuf> {
    fs::read_dir(root().join("docs/lessons"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{nn}-")) && name.ends_with(".md")
        })
}

/// The `## ` headings of a page, fenced blocks left out.
fn sections(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            if let Some(heading) = line.strip_prefix("## ") {
                out.push(heading.trim().to_string());
            }
        }
    }
    out
}

/// What is wrong with a lesson page's sections, if anything.
fn section_errors(found: &[String]) -> Option<String> {
    let want: Vec<&str> = SECTIONS.to_vec();
    let without: Vec<&str> = SECTIONS
        .iter()
        .copied()
        .filter(|s| *s != OPTIONAL)
        .collect();
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    (found != want && found != without).then(|| {
        format!(
            "its `## ` sections are {found:?}; a lesson page has {want:?}, in that order \
             (the last may be left out; anything else is a `### ` under one of them)"
        )
    })
}

#[test]
fn readme_is_a_front_page() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_LINES,
        "README.md has {lines} lines: a front page has at most {README_LINES}; move the rest to a page under docs/ and link it"
    );
    let long: Vec<String> = readme
        .lines()
        .filter(|l| l.starts_with('|') && l.chars().count() > ROW_CHARS)
        .map(|l| format!("{} characters: {}", l.chars().count(), l))
        .collect();
    assert!(
        long.is_empty(),
        "README.md table rows over {ROW_CHARS} characters (keep a row to its lesson; details go to docs/lessons/):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme = read("README.md");
    let mut pages = vec!["docs/lessons/README.md".to_string()];
    for entry in fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(format!(
                "docs/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    for page in ["docs/conventions.md", "docs/lessons/README.md"] {
        assert!(root().join(page).is_file(), "{page} is missing");
    }
    let unlinked: Vec<&String> = pages
        .iter()
        .filter(|p| !readme.contains(&format!("]({p}")))
        .collect();
    assert!(
        unlinked.is_empty(),
        "README.md links none of {unlinked:?}: every page under docs/ is reached from the front page"
    );
}

#[test]
fn every_lesson_has_a_readme_row_and_a_page() {
    let readme = read("README.md");
    let numbers = lesson_numbers();
    assert!(!numbers.is_empty(), "no lessons found under lessons/");
    let mut wrong = Vec::new();
    for nn in &numbers {
        let row = readme.lines().any(|l| {
            l.starts_with('|')
                && (l.contains(&format!("| {nn} |")) || l.contains(&format!("lesson-{nn}")))
        });
        if !row {
            wrong.push(format!(
                "lesson {nn} has no row in README.md's lesson table"
            ));
        }
        if lesson_page(nn).is_none() {
            wrong.push(format!(
                "lesson {nn} has no page docs/lessons/{nn}-topic.md"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_lesson_page_has_the_same_sections() {
    let mut wrong = Vec::new();
    for nn in lesson_numbers() {
        let Some(page) = lesson_page(&nn) else {
            continue; // every_lesson_has_a_readme_row_and_a_page says so
        };
        let text = fs::read_to_string(&page).unwrap();
        if let Some(error) = section_errors(&sections(&text)) {
            wrong.push(format!(
                "{}: {error}",
                page.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// (mounting lesson, mounted file) for every `#[path = "..."]` that reaches into another
/// lesson's folder, e.g. ("04", "lessons/03-interactive/serve.rs").
fn mounts() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = Vec::new();
    collect(&root().join("lessons"), &mut files);
    for file in files {
        let rel = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let lesson = rel["lessons/".len().."lessons/".len() + 2].to_string();
        let dir = Path::new(&rel).parent().unwrap().to_path_buf();
        for line in fs::read_to_string(&file).unwrap().lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("#[path = \"") else {
                continue;
            };
            let target = rest.split('"').next().unwrap();
            // Resolve `..` against the file's folder (a file directly in lessons/ mounts
            // relative to lessons/, as rustc does for a non-mod-rs file at the crate root).
            let mut parts: Vec<String> = dir
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            for part in target.split('/') {
                match part {
                    ".." => {
                        parts.pop();
                    }
                    "." => {}
                    other => parts.push(other.to_string()),
                }
            }
            let mounted = parts.join("/");
            let owner = &mounted["lessons/".len().."lessons/".len() + 2];
            if owner != lesson {
                out.insert((lesson.clone(), mounted));
            }
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The rows of docs/lessons/README.md's "Who mounts what" table, as (lesson, file) pairs: a
/// cell `lessons/12-socks5/ a.rs, b.rs` names a folder, then its files.
fn mounts_table() -> BTreeSet<(String, String)> {
    let page = read("docs/lessons/README.md");
    let start = page
        .find("\n## Who mounts what")
        .expect("docs/lessons/README.md has no \"## Who mounts what\" section");
    let section = &page[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut out = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let lesson = cells[1];
        if !lesson.chars().all(|c| c.is_ascii_digit()) || lesson.is_empty() {
            continue; // the header
        }
        // "lessons/12-socks5/ a.rs, b.rs; flow.rs from its own flow.rs": the files before ';'.
        let files = cells[2].split(';').next().unwrap();
        let (folder, names) = match files.split_once(' ') {
            Some((folder, names)) => (folder, names),
            None => ("", files),
        };
        for name in names.split(',').map(str::trim) {
            out.insert((lesson.to_string(), format!("{folder}{name}")));
        }
        // "flow.rs from its own flow.rs": a file mounted by one of the lesson's own files.
        if let Some(extra) = cells[2].split(';').nth(1) {
            let name = extra.split_whitespace().next().unwrap();
            out.insert((lesson.to_string(), format!("{folder}{name}")));
        }
    }
    out
}

#[test]
fn the_mounts_table_is_the_lessons_paths() {
    let code = mounts();
    let table = mounts_table();
    assert!(!code.is_empty(), "no #[path] mounts found under lessons/");
    let missing: Vec<_> = code.difference(&table).collect();
    let stale: Vec<_> = table.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/lessons/README.md, \"Who mounts what\": mounted in the code but not in the table: \
         {missing:?}; in the table but mounted nowhere: {stale:?}"
    );
}

#[test]
fn line_references_on_the_other_pages_quote_their_line() {
    let mut wrong = Vec::new();
    for entry in fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        for line in fs::read_to_string(&path).unwrap().lines() {
            let Some(at) = line.find("lessons/") else {
                continue;
            };
            let Some((file, rest)) = line[at..].split_once(".rs:") else {
                continue;
            };
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let Ok(number) = digits.parse::<usize>() else {
                continue;
            };
            let quoted = rest[digits.len()..].trim();
            let source = fs::read_to_string(root().join(format!("{file}.rs"))).unwrap_or_default();
            let actual = source.lines().nth(number - 1).unwrap_or("").trim();
            if quoted.is_empty() || !actual.starts_with(quoted) {
                wrong.push(format!(
                    "{name}: {file}.rs:{number} is `{actual}`, the page quotes `{quoted}`"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The pages outside docs/lessons/ that name the code (docs/lessons/ and README.md are
/// exercises/tests/docs.rs's).
fn other_pages() -> Vec<PathBuf> {
    let mut pages = vec![
        root().join("ARCHITECTURE.md"),
        root().join("CONTRIBUTING.md"),
    ];
    for entry in fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(path);
        }
    }
    pages.into_iter().filter(|p| p.is_file()).collect()
}

/// The text of a page with its fenced blocks left out.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every .rs file's text under the folders a page may name code from.
fn all_sources() -> String {
    let mut files = Vec::new();
    for dir in [
        "lessons",
        "src",
        "tests",
        "protocols",
        "tools/src",
        "tools/tests",
        "provoke/src",
        "step/src",
        "step/tests",
        "exercises/src",
        "exercises/tests",
    ] {
        if root().join(dir).is_dir() {
            collect(&root().join(dir), &mut files);
        }
    }
    files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Does an inline code span name a Rust item of ours: a path (`EchoConn::shut_down`), a
/// snake_case name with an underscore, or a lone CamelCase name?
fn names_code(span: &str) -> Option<Vec<&str>> {
    let core = span.strip_suffix("()").unwrap_or(span);
    let ident = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let segments: Vec<&str> = core.split("::").collect();
    if !segments.iter().all(|s| ident(s)) {
        return None;
    }
    let lower = core.chars().any(|c| c.is_ascii_lowercase());
    let snake = core.contains('_') && lower;
    let camel = core.starts_with(|c: char| c.is_ascii_uppercase()) && lower;
    (segments.len() > 1 || snake || camel).then_some(segments)
}

/// Names in the pages' inline code that are not this project's, each with why.
const NOT_OURS: &[(&str, &str)] = &[
    ("lingering_close", "Apache's and nginx's name for it"),
    ("Containerfile", "a file at the top level"),
    ("Makefile", "a file at the top level"),
    ("_copy_to_iter", "a kernel function, in perf's samples"),
    ("_copy_from_iter", "a kernel function, in perf's samples"),
    ("ptrace_scope", "Yama's sysctl"),
];

#[test]
fn the_other_pages_name_code_and_files_that_exist() {
    let sources = all_sources();
    let mut wrong = Vec::new();
    for page in other_pages() {
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        let text = prose(&fs::read_to_string(&page).unwrap());
        for span in text.split('`').skip(1).step_by(2) {
            if span.contains('\n') || NOT_OURS.iter().any(|(s, _)| *s == span) {
                continue;
            }
            if let Some(segments) = names_code(span) {
                let missing: Vec<&&str> =
                    segments.iter().filter(|s| !has_word(&sources, s)).collect();
                if !missing.is_empty() {
                    wrong.push(format!("{name}: `{span}`: no {missing:?} in the sources"));
                }
            }
        }
        // A path to a source file or a folder of the project must exist.
        let dirs = [
            "lessons/",
            "src/",
            "tests/",
            "tools/",
            "protocols/",
            "step/",
            "provoke/",
            "exercises/",
            "scripts/",
        ];
        for word in text.split(|c: char| c.is_whitespace() || "()[]`,;:\"'*".contains(c)) {
            let word = word.trim_end_matches('.');
            let project = dirs.iter().any(|d| word.starts_with(d));
            let checked = word.ends_with(".rs") || word.ends_with('/');
            if !project || !checked || word.contains("NN") || word.contains("FILE") {
                continue;
            }
            if !root().join(word).exists() {
                wrong.push(format!("{name}: {word} does not exist"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "named on a page, found nowhere in the project:\n  {}",
        wrong.join("\n  ")
    );
}

/// The words that tell how the project was made rather than what it is, as (what, does it
/// occur at byte `i` of the lowercased `text`). Spelled in pieces so that this file does not
/// match itself.
fn leak_at(text: &[u8], i: usize) -> Option<&'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let boundary = |j: usize| j >= text.len() || !word(text[j]);
    let starts = |s: &str| text[i..].starts_with(s.as_bytes());
    let who = concat!("ag", "ent");
    if starts(who) {
        let j = i + who.len();
        if boundary(j) || (text.get(j) == Some(&b's') && boundary(j + 1)) {
            return Some(concat!("the word \"ag", "ent\""));
        }
    }
    if starts(concat!("design", ".md")) {
        return Some(concat!("a file outside the repository (DESIGN", ".md)"));
    }
    if starts(concat!("shared", " folder")) {
        return Some(concat!(
            "a place outside the repository (a shared",
            " folder)"
        ));
    }
    let ticket = concat!("iss", "ue ");
    if starts(ticket) && (i == 0 || !word(text[i - 1])) {
        let mut j = i + ticket.len();
        if text.get(j) == Some(&b'#') {
            j += 1;
        }
        if text.get(j).is_some_and(u8::is_ascii_digit) {
            return Some("a ticket number");
        }
    }
    None
}

fn leaks(text: &str) -> Vec<(usize, &'static str)> {
    let lower = text.to_lowercase();
    let bytes = lower.as_bytes();
    let mut out = Vec::new();
    for i in 0..bytes.len() {
        if let Some(what) = leak_at(bytes, i) {
            let line = lower[..i].matches('\n').count() + 1;
            out.push((line, what));
        }
    }
    out
}

/// The tracked .rs and .md files and Makefiles (`git ls-files`), or, outside a git checkout,
/// the same files found by walking the tree.
fn tracked() -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--",
            "*.rs",
            "*.md",
            "Makefile",
            "*/Makefile",
        ])
        .current_dir(root())
        .output();
    if let Some(out) = listed.as_ref().ok().filter(|o| o.status.success()) {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root().join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "my-exercises" {
                walk(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") || name == "Makefile" {
            out.push(path);
        }
    }
}

#[test]
fn the_repository_speaks_of_itself_alone() {
    let files = tracked();
    assert!(
        files.iter().any(|f| f.ends_with("README.md")),
        "the file list has no README.md: {} files",
        files.len()
    );
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue; // deleted in the work tree, or not text
        };
        for (line, what) in leaks(&text) {
            let name = file.strip_prefix(root()).unwrap_or(&file).display();
            found.push(format!("{name}:{line}: {what}"));
        }
    }
    assert!(
        found.is_empty(),
        "the repository tells how it was made; say what it is instead:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let who = concat!("ag", "ent");
    assert_eq!(leaks(&format!("Four other {who}s were here")).len(), 1);
    assert_eq!(leaks(&format!("an {who}.")).len(), 1);
    assert!(leaks(&format!("{who}ive, re{who}x")).is_empty());
    assert_eq!(leaks(concat!("see DESIGN", ".md")).len(), 1);
    assert_eq!(leaks(concat!("(iss", "ue #13)")).len(), 1);
    assert_eq!(leaks(concat!("Before iss", "ue 13's changes")).len(), 1);
    assert!(leaks(concat!("the iss", "ue's target; tiss", "ue 3")).is_empty());
    let good: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    assert!(section_errors(&good).is_none());
    assert!(section_errors(&good[..good.len() - 1]).is_none());
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    assert!(section_errors(&swapped).is_some());
    assert!(section_errors(&good[1..]).is_some());
    let text = "## What it shows\n```\n## not a heading\n```\n### a sub\n## Run it\n";
    assert_eq!(sections(text), ["What it shows", "Run it"]);
}
