//! The learner's side: the skeletons (exercises/NN/src/, generated and tracked: the files
//! with gaps), the learner's crates (my-exercises/NN/, git-ignored, outside the workspace:
//! the files with gaps, a crate root that mounts the lesson's other files, a manifest),
//! building one, checking it (once, or on every save), the progress file, hints and resets.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::check::{self, Exercise, Walk};
use crate::skeleton;

/// The project's root (this crate's parent).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workshop/ has a parent")
        .to_path_buf()
}

/// Where exercise `nn`'s spec and pristine skeleton live: exercises/NN/.
pub fn pristine_dir(root: &Path, nn: &str) -> PathBuf {
    root.join("exercises").join(nn)
}

/// The learner's copy: my-exercises/NN/.
pub fn learner_dir(root: &Path, nn: &str) -> PathBuf {
    root.join("my-exercises").join(nn)
}

/// The progress file: my-exercises/progress.txt, one line per exercise checked.
pub fn progress_file(root: &Path) -> PathBuf {
    root.join("my-exercises").join("progress.txt")
}

/// Exercise `nn`'s spec, parsed.
fn spec(root: &Path, nn: &str) -> Result<skeleton::Spec, String> {
    let spec_path = pristine_dir(root, nn).join("exercise.txt");
    let text =
        fs::read_to_string(&spec_path).map_err(|e| format!("{}: {e}", spec_path.display()))?;
    skeleton::parse_spec(&text).map_err(|e| format!("exercises/{nn}/exercise.txt: {e}"))
}

/// Where the lessons are, seen from the src/ of exercises/NN/ and of my-exercises/NN/.
const ROOT_FROM_SRC: &str = "../../..";

/// Exercise `nn`'s crate as generated from its lessons now, the lessons seen from its src/
/// at `root_from_src`; with `solved`, the gaps left as the lesson has them.
pub fn generate_at(
    root: &Path,
    nn: &str,
    root_from_src: &str,
    solved: bool,
) -> Result<Vec<skeleton::Generated>, String> {
    let opt = skeleton::Options {
        nn,
        root_from_src,
        solved,
    };
    skeleton::generate(root, &spec(root, nn)?, &opt).map_err(|e| format!("exercise {nn}: {e}"))
}

/// The tracked skeleton of `nn` as generated now: its files with gaps, (crate path, text).
pub fn generate(root: &Path, nn: &str) -> Result<Vec<(String, String)>, String> {
    Ok(generate_at(root, nn, ROOT_FROM_SRC, false)?
        .into_iter()
        .filter(|g| g.has_gaps)
        .map(|g| (g.path, g.text))
        .collect())
}

/// Regenerates every tracked skeleton (exercises/NN/src/: the files with gaps, and no
/// other); with `check`, writes nothing. Returns the files written, removed (or stale).
pub fn regenerate(root: &Path, check: bool) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for ex in check::exercises() {
        let files = generate(root, ex.nn)?;
        for (path, text) in &files {
            let file = pristine_dir(root, ex.nn).join(path);
            if fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
                continue;
            }
            changed.push(format!("exercises/{}/{path}", ex.nn));
            if !check {
                fs::create_dir_all(file.parent().expect("a file in a folder"))
                    .and_then(|()| fs::write(&file, text))
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        // A tracked file the skeleton no longer has (its gaps went, or it is mounted now).
        let src = pristine_dir(root, ex.nn).join("src");
        let mut extra: Vec<PathBuf> = fs::read_dir(&src)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        extra.retain(|f| {
            !files
                .iter()
                .any(|(p, _)| pristine_dir(root, ex.nn).join(p) == *f)
        });
        extra.sort();
        for file in extra {
            let name = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            changed.push(format!("{name} (no gap in it: mounted, not tracked)"));
            if !check {
                let gone = match file.is_dir() {
                    true => fs::remove_dir_all(&file),
                    false => fs::remove_file(&file),
                };
                gone.map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
    }
    Ok(changed)
}

/// Writes exercise `nn`'s crate at `dir`, generated from the lessons now, its manifest
/// naming the support crates by `root_ref` (relative to `dir`, or absolute); with
/// `solved`, the gaps as the lesson has them (the checker's tests).
pub fn write_crate_as(
    root: &Path,
    nn: &str,
    dir: &Path,
    root_ref: &str,
    solved: bool,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let root_from_src = if Path::new(root_ref).is_absolute() {
        root_ref.to_string()
    } else {
        format!("../{root_ref}")
    };
    for g in generate_at(root, nn, &root_from_src, solved)? {
        let file = dir.join(&g.path);
        fs::create_dir_all(file.parent().expect("a file in a folder")).map_err(io)?;
        fs::write(&file, g.text).map_err(io)?;
    }
    fs::write(dir.join("Cargo.toml"), skeleton::manifest(nn, root_ref)).map_err(io)?;
    // The project's lock file: the same versions as the lessons, built once for both.
    let _ = fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"));
    Ok(())
}

/// [`write_crate_as`], the gaps cut out.
pub fn write_crate(root: &Path, nn: &str, dir: &Path, root_ref: &str) -> Result<(), String> {
    write_crate_as(root, nn, dir, root_ref, false)
}

/// `make exercise-NN`'s first half: the learner's copy, created the first time only.
pub fn new(root: &Path, nn: &str) -> Result<String, String> {
    let dir = learner_dir(root, nn);
    if dir.join("Cargo.toml").exists() {
        return Ok(format!("my-exercises/{nn}/ is yours (kept as it is)"));
    }
    write_crate(root, nn, &dir, "../..")?;
    Ok(format!(
        "my-exercises/{nn}/ created from lesson {nn}: fill in its todo!()s, then `make check-{nn}`"
    ))
}

/// Builds the crate at `dir` into `target_dir`: the binary's path, or the compiler's message.
pub fn build(dir: &Path, nn: &str, target_dir: &Path, release: bool) -> Result<PathBuf, String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build")
        .arg("-q")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    let out = cmd.output().map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir
        .join(profile)
        .join(bin_name(dir).unwrap_or(format!("exercise-{nn}"))))
}

/// The `[[bin]]` name in the crate's Cargo.toml (a test's variant has a name of its own, so
/// that crates built side by side into one target folder do not overwrite each other).
fn bin_name(dir: &Path) -> Option<String> {
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let after = manifest.split("[[bin]]").nth(1)?;
    let line = after.lines().find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// One check's result, as the progress file keeps it.
pub fn record(root: &Path, nn: &str, walk: &Walk) {
    let file = progress_file(root);
    let mut lines: Vec<String> = fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(&format!("{nn}\t")))
        .map(str::to_string)
        .collect();
    let line = match &walk.failed {
        None => format!("{nn}\tpassed\t{}/{}", walk.passed, walk.total),
        Some((name, f)) => format!(
            "{nn}\tfailed\t{}/{}\t{name}\t{}",
            walk.passed,
            walk.total,
            f.hint.replace(['\t', '\n'], " ")
        ),
    };
    lines.push(line);
    lines.sort();
    let _ = fs::create_dir_all(file.parent().expect("my-exercises"));
    let _ = fs::write(&file, lines.join("\n") + "\n");
}

/// The progress file's line for `nn`, split at its tabs.
fn progress_of(root: &Path, nn: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(progress_file(root)).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{nn}\t")))?;
    Some(line.split('\t').map(str::to_string).collect())
}

/// `make check`: one line per exercise.
pub fn progress_table(root: &Path) -> String {
    let mut out =
        String::from("exercise  lesson                                          status\n");
    for ex in check::exercises() {
        let status = if !learner_dir(root, ex.nn).exists() {
            format!("not started (make exercise-{})", ex.nn)
        } else {
            match progress_of(root, ex.nn) {
                None => format!("started, not checked yet (make check-{})", ex.nn),
                Some(p) if p.get(1).map(String::as_str) == Some("passed") => {
                    format!("passed ({} steps)", p.get(2).cloned().unwrap_or_default())
                }
                Some(p) => format!(
                    "{} steps, stuck at: {} (make hint-{})",
                    p.get(2).cloned().unwrap_or_default(),
                    p.get(3).cloned().unwrap_or_default(),
                    ex.nn
                ),
            }
        };
        out.push_str(&format!("{:<9} {:<47} {status}\n", ex.nn, ex.title));
    }
    out
}

/// The `todo!()`s left in the learner's copy: `file:line: sentence`.
pub fn todos_left(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("src"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if let Some(at) = line.find("todo!(\"") {
                let sentence = line[at + 7..].split("\")").next().unwrap_or("");
                let name = file
                    .strip_prefix(dir)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                out.push(format!("{name}:{}: {sentence}", i + 1));
            }
        }
    }
    out
}

/// `make hint-NN`: the failing step's hint, and the next todo!() to write.
pub fn hint(root: &Path, nn: &str) -> String {
    let dir = learner_dir(root, nn);
    if !dir.exists() {
        return format!("no exercise {nn} yet: `make exercise-{nn}` creates it\n");
    }
    let mut out = String::new();
    match progress_of(root, nn) {
        Some(p) if p.get(1).map(String::as_str) == Some("failed") => {
            out.push_str(&format!(
                "the last check stopped at: {}\nhint: {}\n",
                p.get(3).cloned().unwrap_or_default(),
                p.get(4).cloned().unwrap_or_default()
            ));
        }
        Some(_) => out.push_str("the last check passed every step.\n"),
        None => out.push_str(&format!("not checked yet: `make check-{nn}`\n")),
    }
    let todos = todos_left(&dir);
    if let Some(first) = todos.first() {
        out.push_str(&format!(
            "{} todo!() left in my-exercises/{nn}; the first: {first}\n",
            todos.len()
        ));
    }
    out
}

/// The first free name for an old copy of `nn`: my-exercises/NN.old.1, NN.old.2, …
pub fn old_copy(root: &Path, nn: &str) -> PathBuf {
    (1..)
        .map(|k| root.join("my-exercises").join(format!("{nn}.old.{k}")))
        .find(|p| !p.exists())
        .expect("a free name")
}

/// The progress file without `nn`'s line: a reset exercise is not started, not passed.
pub fn forget(root: &Path, nn: &str) {
    let file = progress_file(root);
    let Ok(text) = fs::read_to_string(&file) else {
        return;
    };
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with(&format!("{nn}\t")))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = fs::write(&file, kept);
}

/// `make reset-NN`: asks on the terminal (`answer`: None when stdin is none), keeps the
/// old copy under a name of its own (no copy is ever overwritten), forgets the exercise's
/// progress, then writes a fresh skeleton. Without a terminal it refuses: nothing is lost
/// unasked.
pub fn reset(root: &Path, nn: &str, answer: Option<&str>) -> Result<String, String> {
    let dir = learner_dir(root, nn);
    if !dir.exists() {
        forget(root, nn);
        return new(root, nn);
    }
    let old = old_copy(root, nn);
    let old_name = old.strip_prefix(root).unwrap_or(&old).display().to_string();
    let Some(answer) = answer else {
        return Err(format!(
            "reset-{nn} replaces my-exercises/{nn}/ and asks first: run it in a terminal"
        ));
    };
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Ok("nothing changed".into());
    }
    fs::rename(&dir, &old).map_err(|e| format!("{}: {e}", dir.display()))?;
    forget(root, nn);
    new(root, nn)?;
    Ok(format!(
        "my-exercises/{nn}/ is a fresh skeleton; your copy is {old_name}/"
    ))
}

/// The question [`reset`] asks, naming where the copy will go.
pub fn reset_question(root: &Path, nn: &str) -> String {
    let old = old_copy(root, nn);
    let old_name = old.strip_prefix(root).unwrap_or(&old).display().to_string();
    format!(
        "Replace my-exercises/{nn}/ with a fresh skeleton? Your copy is kept as {old_name}/ [y/N] "
    )
}

/// Asks [`reset_question`] on the terminal and reads the answer (None without a terminal).
pub fn ask_reset(root: &Path, nn: &str) -> Option<String> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return None;
    }
    if !learner_dir(root, nn).exists() {
        return Some(String::new());
    }
    print!("{}", reset_question(root, nn));
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Some(answer)
}

/// The newest modification time of the files under `dir` (its src/ and manifest), and how
/// many there are: a change to either is a save.
pub fn stamp(dir: &Path) -> (Option<std::time::SystemTime>, usize) {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>, n: &mut usize) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest, n);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *n += 1;
                *newest = (*newest).max(Some(modified));
            }
        }
    }
    let (mut newest, mut n) = (None, 0);
    walk(&dir.join("src"), &mut newest, &mut n);
    if let Ok(modified) = fs::metadata(dir.join("Cargo.toml")).and_then(|m| m.modified()) {
        newest = newest.max(Some(modified));
        n += 1;
    }
    (newest, n)
}

/// Prints the walk's header and lines; returns it.
pub fn check_binary(ex: &Exercise, exe: &Path, args: &[String]) -> Walk {
    println!("check {} · {} · {}", ex.nn, ex.title, exe.display());
    check::walk(ex, exe, args, &mut |line| println!("{line}"))
}

/// [`check_binary`] for a learner's build ([`check::walk_build`]).
pub fn check_build(ex: &Exercise, exe: &Path, args: &[String]) -> Walk {
    println!("check {} · {} · {}", ex.nn, ex.title, exe.display());
    check::walk_build(ex, exe, args, &mut |line| println!("{line}"))
}
