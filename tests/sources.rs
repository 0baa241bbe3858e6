//! What strace cannot check: that the calls defining each lesson are made in the lesson's own
//! sources, where a learner reads them, and not hidden in the support library under src/.
//!
//! A lesson's sources are its file (lessons/NN-topic.rs) or its folder (lessons/NN-topic/),
//! plus the files it mounts with `#[path = "..."]` (lessons 04 and 05 mount lesson 03's loop,
//! lesson 13 mounts lesson 12's relay). Comments are left out before searching, so a call
//! that is only described does not count. The lists are explicit, one per lesson: a call
//! moved out of a lesson makes this test fail with the lesson and the call named.
//!
//! The same file also checks that the README's lesson table names each lesson by the title
//! in its header (the one place a lesson describes itself).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The Rust calls (regular expressions would be overkill: each alternative is a literal that
/// must appear in code) that make each lesson's defining system calls. Each inner list is one
/// call; any of its spellings counts.
const DEFINING: &[(&str, &[&[&str]])] = &[
    (
        "00",
        &[
            &["socket("],
            &["connect("],
            &["poll("],
            &["read("],
            &["write("],
            &["shutdown("],
            &["close("],
        ],
    ),
    (
        "01",
        &[
            &["socket("],
            &["setsockopt("],
            &["bind("],
            &["listen("],
            &["accept("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "02",
        &[
            &["socket("],
            &["setsockopt("],
            &["bind("],
            &["listen("],
            &["accept("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "03",
        &[
            &["socket("],
            &["bind("],
            &["listen("],
            &["accept("],
            &["read("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "04",
        &[
            &["accept("],
            &["fork()"],
            &["waitpid("],
            &["sigaction("],
            &["read("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "05",
        &[
            &["accept("],
            &["thread::Builder", ".spawn("],
            &["read("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "06",
        &[
            &["O_NONBLOCK"],
            &["fcntl("],
            &["accept(", "accept4("],
            &["read("],
            &["write("],
            &["close("],
            &["shutdown("],
        ],
    ),
    (
        "07",
        &[
            &["select("],
            &["accept4(", "accept("],
            &["read("],
            &["write("],
            &["close("],
            &["shutdown("],
        ],
    ),
    (
        "08",
        &[
            &["poll("],
            &["accept4(", "accept("],
            &["read("],
            &["write("],
            &["close("],
            &["shutdown("],
        ],
    ),
    (
        "09",
        &[
            &["F_SETOWN"],
            &["F_SETSIG"],
            &["O_ASYNC"],
            &["sigtimedwait("],
            &["accept4(", "accept("],
            &["read("],
            &["write("],
            &["close("],
            &["shutdown("],
        ],
    ),
    (
        "10",
        &[
            &["Epoll::new(", "epoll_create1("],
            &[".add(", "epoll_ctl("],
            &[".wait(", "epoll_wait("],
            &["accept4(", "accept("],
            &["read("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "11",
        &[
            &["IoUring::", "io_uring_setup("],
            &["opcode::Accept"],
            &["opcode::Recv"],
            &["opcode::Send"],
            &["submit_and_wait("],
            &["shutdown("],
            &["close("],
        ],
    ),
    (
        "12",
        &[
            &["poll("],
            &["accept4("],
            &["socket("],
            &["connect("],
            &["getsockopt("],
            &["getsockname("],
            &["read("],
            &["write("],
            &["shutdown("],
            &["close("],
            &["pipe2("],
            &["getaddrinfo", "to_socket_addrs("],
        ],
    ),
    (
        "13",
        &[
            &["poll("],
            &["connect("],
            &["getsockopt("],
            &["read("],
            &["write("],
            &["close("],
        ],
    ),
    (
        "14",
        &[
            &["poll("],
            &["accept4("],
            &["socket("],
            &["connect("],
            &["getsockopt("],
            &["getsockname("],
            &["read("],
            &["write("],
            &["pipe2("],
            &["F_SETPIPE_SZ("],
            &["splice("],
            &["SPLICE_F_MOVE"],
            &["shutdown("],
            &["close("],
        ],
    ),
    (
        "15",
        &[
            &["IoUring::", "io_uring_setup("],
            &["register_buf_ring"],
            &["opcode::AcceptMulti"],
            &["getpeername("],
            &["opcode::RecvMulti"],
            &["give_back("],
            &["opcode::Send"],
            &["opcode::AsyncCancel"],
            &["submit_and_wait("],
            &["shutdown("],
            &["close("],
        ],
    ),
    (
        "16",
        &[
            &["poll("],
            &["SockType::Datagram"],
            &["sockopt::RcvBuf"],
            &["bind("],
            &["getsockname("],
            &["libc::recvfrom("],
            &["libc::MSG_TRUNC"],
            &["libc::sendto("],
            &["libc::recvmmsg("],
            &["libc::sendmmsg("],
            &["close_fd(", "close("],
        ],
    ),
];

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
    let path = lesson_path(number);
    if path.is_dir() {
        path.join("main.rs")
    } else {
        path
    }
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
    for (number, calls) in DEFINING {
        let files = sources(number);
        let code: String = files
            .iter()
            .map(|f| code_only(&fs::read_to_string(f).unwrap()))
            .collect();
        for spellings in *calls {
            // `getsockname::<SockaddrStorage>(` spells `getsockname(` with a turbofish.
            let found = |s: &&str| {
                code.contains(*s)
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
fn every_lesson_is_listed() {
    let listed: BTreeSet<&str> = DEFINING.iter().map(|(n, _)| *n).collect();
    let present: BTreeSet<String> = fs::read_dir(root().join("lessons"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy()[..2].to_string())
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(
        listed, present,
        "a lesson without a list of defining calls (or the reverse)"
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

/// The title on a lesson's first header line: `//! Lesson 03 — title.` → `title`.
fn header_title(number: &str) -> String {
    let text = fs::read_to_string(main_file(number)).unwrap();
    let first = text.lines().next().unwrap_or("");
    let prefix = format!("//! Lesson {number} — ");
    let title = first
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("lesson {number}: first line {first:?} is not `{prefix}title.`"));
    title.strip_suffix('.').unwrap_or(title).to_string()
}

#[test]
fn readme_table_takes_titles_from_the_headers() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    for (number, _) in DEFINING {
        let title = header_title(number);
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {number} |")))
            .unwrap_or_else(|| panic!("README: no table row for lesson {number}"));
        let cell = row.split('|').nth(2).unwrap_or("").trim();
        assert!(
            cell.starts_with(&format!("[{title}](")),
            "README row {number}: `{cell}` should be `[{title}](lessons/...)`, the header's title"
        );
    }
}

#[test]
fn every_header_is_short_and_links_its_doc() {
    for (number, _) in DEFINING {
        let path = main_file(number);
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
    for (number, _) in DEFINING {
        for file in sources(number) {
            let lines = fs::read_to_string(&file).unwrap().lines().count();
            assert!(
                lines <= 500,
                "lesson {number}: {} has {lines} lines; split it by the stages of a connection's life",
                Path::new(&file).display()
            );
        }
    }
}

#[test]
fn make_help_lists_every_lesson_by_its_header_title() {
    let out = std::process::Command::new("make")
        .args(["-s", "--no-print-directory", "help"])
        .current_dir(root())
        .output()
        .expect("make");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (number, _) in DEFINING {
        let line = format!("make lesson-{number}   {}", header_title(number));
        assert!(help.contains(&line), "make help lacks `{line}`:\n{help}");
    }
}
