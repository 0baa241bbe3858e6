//! The docs cannot drift from the code. For the README and every docs/lessons page:
//! - every fenced Rust block is cut from a lesson's region (`make docs`), and is up to date;
//! - every inline `code` that names a Rust item (a path, a call, a method, a snake_case
//!   name) names one that exists in the sources, verbatim or by its definition;
//! - every `lessons/FILE.rs:N  text` reference quotes line N of that file;
//! - no count or place that the sources would have to keep true by hand ("about 300 lines",
//!   "at the top of the file", "in eight calls");
//! - a folder lesson's page links every file of the folder.

use std::fs;
use std::path::{Path, PathBuf};

use workshop::docs;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pages() -> Vec<(String, String)> {
    docs::targets(&root())
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap().display().to_string();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Every .rs file of the project that a page may quote or name.
fn sources() -> String {
    let mut text = String::new();
    for dir in [
        "lessons",
        "src",
        "protocols/src",
        "tests",
        "tools/src",
        "provoke/src",
        "step/src",
    ] {
        collect(&root().join(dir), &mut text);
    }
    text
}

fn collect(dir: &Path, text: &mut String) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, text);
        } else if path.extension().is_some_and(|x| x == "rs") {
            text.push_str(&fs::read_to_string(&path).unwrap());
            text.push('\n');
        }
    }
}

/// `text` with its fenced blocks left out.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn included_blocks_are_up_to_date() {
    let mut stale = Vec::new();
    for file in docs::targets(&root()) {
        let (now, rendered) = docs::render_file(&root(), &file).unwrap_or_else(|e| panic!("{e}"));
        if now != rendered {
            stale.push(file.display().to_string());
        }
    }
    assert!(stale.is_empty(), "stale, run `make docs`: {stale:?}");
}

#[test]
fn every_rust_block_is_cut_from_a_region() {
    for (name, text) in pages() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("```rust") {
                let include = i > 0 && docs::include_line(lines[i - 1]).is_some();
                assert!(
                    include,
                    "{name}:{}: a Rust block without an `<!-- include FILE [region] -->` line above it",
                    i + 1
                );
            }
        }
    }
}

/// Does `span` look like it names a Rust item (rather than a call of the C API, a shell
/// command, a constant or a path)?
fn rusty(span: &str) -> bool {
    let shell = [
        "make ",
        "nc ",
        "curl ",
        "ss ",
        "cargo ",
        "redis-cli ",
        "strace ",
        "ps ",
        "prlimit ",
        "ulimit ",
        "sysctl ",
        "lesson-",
        "provoke ",
        "step ",
        "echo ",
        "diff ",
        "top",
        "kill ",
        "git ",
        "scripts/",
        "perf ",
        "target/",
    ];
    // A shell command, a trace line (`accept(3, …) = 4`) or a log line (`read: EAGAIN (…)`).
    let shell_like = span.starts_with('$') || shell.iter().any(|s| span.starts_with(s));
    if shell_like || span.contains(" = ") || span.contains(": E") {
        return false;
    }
    let file = [".rs", ".md", ".toml", ".svg", ".sh"];
    if file.iter().any(|x| span.ends_with(x)) && !span.contains(' ') {
        return false;
    }
    let snake = span
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| {
            w.contains('_')
                && w.chars().any(|c| c.is_ascii_lowercase())
                && !w.chars().any(|c| c.is_ascii_uppercase())
                && !w.starts_with('_')
        });
    let method = span
        .chars()
        .zip(span.chars().skip(1))
        .any(|(a, b)| a.is_ascii_alphanumeric() && b == '.')
        && span.contains('(');
    // A lone CamelCase name (`EchoHandler`, `Connection`): a type of ours, or of a crate.
    let camel = span.starts_with(|c: char| c.is_ascii_uppercase())
        && span.chars().any(|c| c.is_ascii_lowercase())
        && span.chars().all(|c| c.is_ascii_alphanumeric());
    camel
        || span.contains("::")
        || span.contains("!(")
        || span.contains("=>")
        || span.contains('{')
        || span.starts_with("let ")
        || span.starts_with("fn ")
        || snake
        || method
}

/// Is `name` defined in `sources` (fn, type, module, constant, field or variant)?
fn defined(name: &str, sources: &str) -> bool {
    let kinds = [
        "fn ",
        "struct ",
        "enum ",
        "mod ",
        "trait ",
        "type ",
        "const ",
        "static ",
        "macro_rules! ",
    ];
    kinds
        .iter()
        .any(|k| sources.contains(&format!("{k}{name}")))
        || sources.contains(&format!("{name}: "))
        || sources.contains(&format!("    {name},"))
        || sources.contains(&format!("    {name}("))
}

/// A span like `Connection::interest`, `splice::a_test_name` or `logged_in(client ip)`:
/// every segment of its path is defined somewhere.
fn resolves(span: &str, sources: &str) -> bool {
    let path = span.split('(').next().unwrap_or(span).trim();
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let segments: Vec<&str> = path.split("::").collect();
    segments.iter().all(|s| ident(s)) && segments.iter().all(|s| defined(s, sources))
}

/// Spans that look like Rust but are not this project's items, each with why.
const NOT_OURS: &[(&str, &str)] = &[
    ("lingering_close", "Apache's and nginx's names for it"),
    ("flag::register", "signal-hook's API"),
    (
        "pthread_create: EAGAIN",
        "glibc's error, as the lesson prints it",
    ),
    ("select(nfds, &read_set, &write_set, NULL, timeout)", "C"),
    ("FD_SET(1500, &set)", "C"),
    ("FD_SET(1024, &set)", "C"),
    ("{fd, events, revents}", "C's struct pollfd"),
    ("allowed:2001:db8::7", "a Redis key"),
    (
        "sockets_by_hand::mistakes! { pub … }",
        "an abridged macro call",
    ),
    ("StatefulHandler", "the Ruby talk's class"),
    ("Submitter", "the io-uring crate's type"),
    ("Containerfile", "a file at the top level"),
    (
        "io_*",
        "the kernel's io_uring functions, as a profile names them",
    ),
    ("sock_from_file", "a kernel function, as a profile names it"),
    (
        "finish_task_switch",
        "a kernel function, as a profile names it",
    ),
    ("voluntary_ctxt_switches", "a field of /proc/PID/status"),
    ("nonvoluntary_ctxt_switches", "a field of /proc/PID/status"),
];

#[test]
fn inline_code_names_what_exists() {
    let sources = sources();
    let squeezed = squeeze(&sources);
    let mut missing = Vec::new();
    for (name, text) in pages() {
        for (i, span) in prose(&text).split('`').enumerate() {
            let known = NOT_OURS.iter().any(|(s, _)| *s == span);
            if i % 2 == 0 || span.contains('\n') || known || !rusty(span) {
                continue;
            }
            if !squeezed.contains(&squeeze(span)) && !resolves(span, &sources) {
                missing.push(format!("{name}: `{span}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named in the docs, found nowhere in the sources:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn line_references_quote_their_line() {
    for (name, text) in pages() {
        for line in text.lines() {
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
            let path = root().join(format!("{file}.rs"));
            let source =
                fs::read_to_string(&path).unwrap_or_else(|_| panic!("{name}: no {file}.rs"));
            let actual = source.lines().nth(number - 1).unwrap_or("").trim();
            assert!(
                !quoted.is_empty() && actual.starts_with(quoted),
                "{name}: {file}.rs:{number} is `{actual}`, the docs quote `{quoted}`"
            );
        }
    }
}

#[test]
fn no_hand_kept_counts_or_places() {
    let numbers = [
        "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    for (name, text) in pages() {
        let text = squeeze(&prose(&text)).to_lowercase();
        for phrase in ["top of the file", "bottom of the file"] {
            assert!(
                !text.contains(phrase),
                "{name}: \"{phrase}\": name the function instead"
            );
        }
        for n in numbers {
            let phrase = format!(" in {n} calls");
            assert!(
                !text.contains(&phrase),
                "{name}: \"{phrase}\": counts drift; leave it out"
            );
        }
        let words: Vec<&str> = text.split(' ').collect();
        for w in words.windows(3) {
            let count = w[0] == "about" && w[1].parse::<u32>().is_ok() && w[2].starts_with("lines");
            assert!(
                !count,
                "{name}: \"{}\": line counts drift; leave it out",
                w.join(" ")
            );
        }
    }
}

#[test]
fn a_folder_lessons_page_links_every_file() {
    for entry in fs::read_dir(root().join("lessons")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let lesson = dir.file_name().unwrap().to_string_lossy().into_owned();
        let page = fs::read_to_string(root().join(format!("docs/lessons/{lesson}.md")))
            .unwrap_or_else(|_| panic!("no docs/lessons/{lesson}.md"));
        for file in fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().file_name().to_string_lossy().into_owned();
            let link = format!("lessons/{lesson}/{file}");
            assert!(
                page.contains(&link),
                "docs/lessons/{lesson}.md never links {link}"
            );
        }
    }
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let sources = "impl Connection {\n    fn interest(&self) {}\n}\nstruct Connection;\n";
    assert!(rusty("!flow.waiting()") && rusty("Connection::interest") && rusty("half_close"));
    assert!(!rusty("make lesson-03") && !rusty("SO_REUSEADDR") && !rusty("accept(3, …) = 4"));
    assert!(rusty("EchoHandler") && !rusty("Linux 5.1") && !rusty("EAGAIN"));
    assert!(resolves("Connection::interest", sources));
    assert!(!resolves("Connection::waiting", sources));
}
