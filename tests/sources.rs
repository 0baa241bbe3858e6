//! What strace cannot check: that the calls a lesson teaches are made in the lesson's own
//! sources, where a learner reads them, and not hidden in the support library under src/.
//!
//! A lesson's sources are its file (lessons/NN-topic.rs) or its folder (lessons/NN-topic/),
//! plus the files it mounts with `#[path = "..."]` (lessons 04 and 05 mount lesson 03's loop,
//! lesson 13 mounts lesson 12's relay). Comments are left out before searching, so a call
//! that is only described does not count. The calls are each lesson's `calls` in
//! lessons/lessons.toml, as Rust spells them (each a literal that must appear in code, `a|b`
//! where either counts): a call moved out of a lesson makes this test fail with the lesson
//! and the call named.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use workshop::lessons::Index;

/// Every lesson's number and taught calls (each call's alternative spellings), from
/// lessons/lessons.toml.
fn defining() -> Vec<(String, Vec<Vec<String>>)> {
    let index = Index::load(&root()).unwrap_or_else(|e| panic!("{e}"));
    index
        .lessons
        .into_iter()
        .map(|l| (l.number, l.calls))
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// lessons/NN-topic.rs or lessons/NN-topic/ (its main.rs), whichever exists.
fn lesson_path(number: &str) -> PathBuf {
    let dir = root().join("lessons");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{number}-")) && (p.is_dir() || name.ends_with(".rs"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "lesson {number}: expected one file or folder, found {found:?}"
    );
    found.pop().unwrap()
}

/// The main file of a lesson (its header lives there).
fn main_file(number: &str) -> PathBuf {
    workshop::lessons::main_file(&root(), number).unwrap_or_else(|e| panic!("{e}"))
}

/// Every source file of the lesson: its file or its folder's .rs files, and what they mount
/// with #[path], followed transitively.
fn sources(number: &str) -> BTreeSet<PathBuf> {
    let path = lesson_path(number);
    let mut todo: Vec<PathBuf> = if path.is_dir() {
        fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect()
    } else {
        vec![path]
    };
    let mut seen = BTreeSet::new();
    while let Some(file) = todo.pop() {
        let file = file
            .canonicalize()
            .unwrap_or_else(|e| panic!("{file:?}: {e}"));
        if !seen.insert(file.clone()) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for mounted in mounted_paths(&text) {
            todo.push(file.parent().unwrap().join(mounted));
        }
    }
    seen
}

/// The targets of `#[path = "..."]` attributes in `text`.
fn mounted_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("#[path")?;
            let start = rest.find('"')? + 1;
            let end = start + rest[start..].find('"')?;
            Some(rest[start..end].to_string())
        })
        .collect()
}

/// `text` without its comments (`//`, `///`, `//!` to the end of the line; `/* */` blocks).
/// String literals are left alone, except that a `//` inside one would cut the line short,
/// which can only hide a call, never invent one.
fn code_only(text: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        let mut line = line.to_string();
        if in_block {
            match line.find("*/") {
                Some(end) => {
                    line = line[end + 2..].to_string();
                    in_block = false;
                }
                None => continue,
            }
        }
        if let Some(start) = line.find("/*") {
            if let Some(len) = line[start..].find("*/") {
                line.replace_range(start..start + len + 2, "");
            } else {
                line.truncate(start);
                in_block = true;
            }
        }
        if let Some(comment) = line.find("//") {
            line.truncate(comment);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn every_lesson_has_its_defining_calls_in_its_own_sources() {
    let mut missing = Vec::new();
    for (number, calls) in defining() {
        let files = sources(&number);
        let code: String = files
            .iter()
            .map(|f| code_only(&fs::read_to_string(f).unwrap()))
            .collect();
        for spellings in &calls {
            // `getsockname::<SockaddrStorage>(` spells `getsockname(` with a turbofish.
            let found = |s: &String| {
                code.contains(s.as_str())
                    || s.strip_suffix('(')
                        .is_some_and(|name| code.contains(&format!("{name}::<")))
            };
            if !spellings.iter().any(found) {
                let names: Vec<_> = files
                    .iter()
                    .map(|f| {
                        f.strip_prefix(root().canonicalize().unwrap())
                            .unwrap_or(f)
                            .display()
                            .to_string()
                    })
                    .collect();
                missing.push(format!(
                    "lesson {number}: no {} in {}",
                    spellings.join(" / "),
                    names.join(", ")
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "defining calls outside their lesson:\n{}",
        missing.join("\n")
    );
}

#[test]
fn comments_do_not_count() {
    let code = code_only("// accept(\nlet x = 1; // read(\n/* write(\n close( */ poll(x)\n");
    assert!(!code.contains("accept(") && !code.contains("read("));
    assert!(!code.contains("write(") && !code.contains("close("));
    assert!(code.contains("poll(x)"));
    assert_eq!(
        mounted_paths("#[path = \"../12-socks5/relay.rs\"]\nmod relay;"),
        ["../12-socks5/relay.rs"]
    );
}

#[test]
fn every_header_is_short_and_links_its_doc() {
    for (number, _) in defining() {
        let path = main_file(&number);
        let text = fs::read_to_string(&path).unwrap();
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(
            header.len() <= 16,
            "{}: header of {} lines; about ten, the rest in docs/lessons/",
            path.display(),
            header.len()
        );
        let doc = header
            .iter()
            .find_map(|l| {
                let start = l.find("docs/lessons/")?;
                let rest = &l[start..];
                let end = rest.find(".md")? + 3;
                Some(rest[..end].to_string())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: the header links no docs/lessons/NN-topic.md",
                    path.display()
                )
            });
        assert!(
            root().join(&doc).is_file(),
            "{}: {doc} does not exist",
            path.display()
        );
    }
}

#[test]
fn lesson_files_read_in_one_sitting() {
    // A few hundred lines per file at most: a 15-minute read.
    for (number, _) in defining() {
        for file in sources(&number) {
            let lines = fs::read_to_string(&file).unwrap().lines().count();
            assert!(
                lines <= 500,
                "lesson {number}: {} has {lines} lines; split it by the stages of a connection's life",
                Path::new(&file).display()
            );
        }
    }
}
