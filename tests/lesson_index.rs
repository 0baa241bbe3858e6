//! A lesson is described once: its title in the first line of its header, the rest in its
//! table of lessons/lessons.toml. Whatever is derived from them or repeats them must agree,
//! and these tests fail, naming the lesson and both places, when one drifts:
//! - the lessons under lessons/, the index's tables and Cargo.toml's `lesson-NN` binaries
//!   are the same set (a new lesson needs all three);
//! - the Makefile's effective TRACE_NN, PROVOKE_NN, exercises and lesson file (asked of make
//!   itself, `make print-lesson-NN`) are the index's;
//! - the port in the index is the one the lesson's `lesson!(PORT, …)` gives;
//! - `make help` lists each lesson by its header's title, and the README's table has a row
//!   `| NN |` with that title;
//! - the workshop's exercises (workshop/src/check.rs) are the index's, with the same titles;
//! - the copies of the strace filters (tests/common's TRACE_SET, the stepper's DEFAULT_STOPS
//!   and its tests' TRACE_01 and TRACE_04) are the index's.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use workshop::lessons::{self, Index};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn index() -> Index {
    Index::load(&root()).unwrap_or_else(|e| panic!("{e}"))
}

fn numbers(index: &Index) -> Vec<String> {
    index.lessons.iter().map(|l| l.number.clone()).collect()
}

fn title(number: &str) -> String {
    lessons::title(&root(), number).unwrap_or_else(|e| panic!("{e}"))
}

/// `path` relative to the project's root, as the Makefile and Cargo.toml write it.
fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Cargo.toml's `[[bin]]` tables: name → path.
fn cargo_bins() -> BTreeMap<String, String> {
    let text = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut bins = BTreeMap::new();
    for table in text.split("[[bin]]").skip(1) {
        let table = table.split("\n[").next().unwrap_or("");
        let value = |key: &str| {
            table.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(path)) = (value("name"), value("path")) {
            bins.insert(name, path);
        }
    }
    bins
}

#[test]
fn every_lesson_has_a_table_and_a_binary_and_every_table_a_lesson() {
    let index = index();
    let present = lessons::present(&root()).unwrap();
    assert_eq!(
        numbers(&index),
        present,
        "lessons/lessons.toml's [lesson.NN] tables against the lessons under lessons/"
    );
    let bins = cargo_bins();
    for number in &present {
        let main = relative(&lessons::main_file(&root(), number).unwrap());
        let name = format!("lesson-{number}");
        assert_eq!(
            bins.get(&name),
            Some(&main),
            "Cargo.toml needs [[bin]] name = \"{name}\", path = \"{main}\""
        );
    }
    let extra: Vec<&String> = bins
        .keys()
        .filter(|b| {
            b.strip_prefix("lesson-")
                .is_some_and(|n| !present.contains(&n.to_string()))
        })
        .collect();
    assert!(
        extra.is_empty(),
        "Cargo.toml: binaries of no lesson: {extra:?}"
    );
}

/// What make says of each lesson: `make -s print-lesson-NN`'s `name=value` lines, for all
/// lessons in one run of make.
fn make_says(numbers: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let targets: Vec<String> = numbers
        .iter()
        .map(|n| format!("print-lesson-{n}"))
        .collect();
    let out = Command::new("make")
        .args(["-s", "--no-print-directory"])
        .args(&targets)
        .current_dir(root())
        .output()
        .expect("make");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "make {}: {}{stdout}",
        targets.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut said: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut lines = stdout.lines();
    for number in numbers {
        // Each target prints the same keys, in the same order: file first.
        let mut fields = BTreeMap::new();
        for key in ["file", "trace", "provoke", "step", "exercise"] {
            let line = lines.next().unwrap_or_default();
            let value = line
                .strip_prefix(&format!("{key}="))
                .unwrap_or_else(|| panic!("print-lesson-{number}: `{line}` is not {key}=…"));
            fields.insert(key.to_string(), value.to_string());
        }
        said.insert(number.clone(), fields);
    }
    said
}

#[test]
fn the_makefile_derives_what_the_index_says() {
    let index = index();
    let said = make_says(&numbers(&index));
    let mut wrong = Vec::new();
    for lesson in &index.lessons {
        let nn = &lesson.number;
        let make = &said[nn];
        let main = relative(&lessons::main_file(&root(), nn).unwrap());
        let expected = [
            ("file", main),
            ("trace", index.trace(nn).unwrap()),
            ("provoke", lesson.provoke.join(" ")),
            (
                "exercise",
                if lesson.exercise.is_some() {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            ),
        ];
        for (key, value) in expected {
            if make[key] != value {
                wrong.push(format!(
                    "lesson {nn} {key}: lessons.toml says `{value}`, make says `{}`",
                    make[key]
                ));
            }
        }
        // The stepper's list is the same filter with strace's %network spelled out.
        let step = &make["step"];
        let trace = index.trace(nn).unwrap();
        let kept = trace
            .split(',')
            .filter(|c| *c != "%network")
            .all(|c| step.split(',').any(|s| s == c));
        if step.contains('%') || !kept {
            wrong.push(format!(
                "lesson {nn}: step list `{step}` is not trace `{trace}`"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the Makefile and lessons/lessons.toml:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_index_port_is_the_lessons() {
    for lesson in &index().lessons {
        let path = lessons::main_file(&root(), &lesson.number).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let port: Option<u16> = text.lines().find_map(|l| {
            let rest = l.split_once("lesson!(")?.1;
            rest.split([',', ')']).next()?.trim().parse().ok()
        });
        assert_eq!(
            port,
            Some(lesson.port),
            "lesson {}: lessons.toml's port against `lesson!(PORT, …)` in {}",
            lesson.number,
            relative(&path)
        );
    }
}

#[test]
fn make_help_lists_every_lesson_by_its_header_title() {
    let out = Command::new("make")
        .args(["-s", "--no-print-directory", "help"])
        .current_dir(root())
        .output()
        .expect("make");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for number in numbers(&index()) {
        let line = format!("make lesson-{number}   {}", title(&number));
        assert!(help.contains(&line), "make help lacks `{line}`:\n{help}");
    }
}

#[test]
fn the_readme_row_of_each_lesson_carries_its_title() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    for number in numbers(&index()) {
        let title = title(&number);
        let row = readme
            .lines()
            .find(|l| l.contains(&format!("| {number} |")))
            .unwrap_or_else(|| panic!("README: no table row `| {number} |`"));
        assert!(
            row.contains(&title),
            "README row {number} lacks the header's title `{title}`: {row}"
        );
    }
}

#[test]
fn the_checkers_exercises_are_the_indexs() {
    let index = index();
    let from_index: BTreeMap<String, String> = index
        .lessons
        .iter()
        .filter_map(|l| Some((l.number.clone(), l.exercise.clone()?)))
        .collect();
    let from_checker: BTreeMap<String, String> = workshop::check::exercises()
        .iter()
        .map(|e| (e.nn.to_string(), e.title.to_string()))
        .collect();
    assert_eq!(
        from_index, from_checker,
        "exercises: lessons/lessons.toml's `exercise` against workshop/src/check.rs"
    );
}

/// The string constant `name` in the Rust file `path`, its `\`-newline continuations joined.
fn rust_str_const(path: &str, name: &str) -> String {
    let text = fs::read_to_string(root().join(path)).unwrap();
    let start = text
        .find(&format!("{name}: &str ="))
        .unwrap_or_else(|| panic!("{path}: no const {name}"));
    let body = &text[start..];
    let body = &body[body.find('"').unwrap() + 1..];
    let body = &body[..body.find('"').unwrap()];
    body.replace("\\\n", "")
}

#[test]
fn copies_of_the_default_filter_are_the_indexs() {
    let index = index();
    assert_eq!(
        rust_str_const("tests/common/mod.rs", "TRACE_SET"),
        index.default_trace,
        "tests/common's TRACE_SET against lessons.toml's [default] trace"
    );
    // The stepper's default stops: make's step list of a lesson whose filter is the default.
    let plain = index
        .lessons
        .iter()
        .find(|l| l.trace == "%default")
        .expect("a lesson with the default filter");
    let said = make_says(std::slice::from_ref(&plain.number));
    assert_eq!(
        rust_str_const("step/src/decode.rs", "DEFAULT_STOPS"),
        said[&plain.number]["step"],
        "step's DEFAULT_STOPS against the default filter, %network spelled out"
    );
    // The stepper's tests run lessons 01 and 04 with their filters.
    for nn in ["01", "04"] {
        assert_eq!(
            rust_str_const("step/tests/step.rs", &format!("TRACE_{nn}")),
            index.trace(nn).unwrap(),
            "step/tests/step.rs's TRACE_{nn} against lessons.toml's lesson {nn}"
        );
    }
}
