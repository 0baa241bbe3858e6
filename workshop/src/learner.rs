//! The learner's side: the pristine skeletons (exercises/NN/src/, generated and tracked), the
//! learner's copies (my-exercises/NN/, git-ignored, outside the workspace), building one,
//! checking it, the progress file, hints and resets.

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

/// The skeleton of `nn` as generated from its lesson now: (crate path, text).
pub fn generate(root: &Path, nn: &str) -> Result<Vec<(String, String)>, String> {
    let spec_path = pristine_dir(root, nn).join("exercise.txt");
    let text =
        fs::read_to_string(&spec_path).map_err(|e| format!("{}: {e}", spec_path.display()))?;
    let spec =
        skeleton::parse_spec(&text).map_err(|e| format!("exercises/{nn}/exercise.txt: {e}"))?;
    skeleton::generate(root, &spec).map_err(|e| format!("exercise {nn}: {e}"))
}

/// The skeleton of `nn` with its gaps left as the lesson has them (the mistakes and the
/// markers still cut): what a learner who fills every gap as the lesson does ends with.
pub fn generate_solved(root: &Path, nn: &str) -> Result<Vec<(String, String)>, String> {
    let spec_path = pristine_dir(root, nn).join("exercise.txt");
    let text =
        fs::read_to_string(&spec_path).map_err(|e| format!("{}: {e}", spec_path.display()))?;
    let mut spec =
        skeleton::parse_spec(&text).map_err(|e| format!("exercises/{nn}/exercise.txt: {e}"))?;
    spec.gaps.clear();
    skeleton::generate(root, &spec).map_err(|e| format!("exercise {nn}: {e}"))
}

/// Regenerates every pristine skeleton; with `check`, writes nothing and returns the stale
/// files. Returns the files written (or stale).
pub fn regenerate(root: &Path, check: bool) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for ex in check::exercises() {
        for (path, text) in generate(root, ex.nn)? {
            let file = pristine_dir(root, ex.nn).join(&path);
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
    }
    Ok(changed)
}

/// The pristine skeleton's files as tracked: (crate path, text).
pub fn pristine_files(root: &Path, nn: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (path, _) in generate(root, nn)? {
        let file = pristine_dir(root, nn).join(&path);
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        out.push((path, text));
    }
    Ok(out)
}

/// Writes a crate for exercise `nn` at `dir` from the pristine skeleton, its manifest
/// naming the support crates by `root_ref` (relative to `dir`, or absolute).
pub fn write_crate(root: &Path, nn: &str, dir: &Path, root_ref: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    for (path, text) in pristine_files(root, nn)? {
        let file = dir.join(&path);
        fs::create_dir_all(file.parent().expect("a file in a folder")).map_err(io)?;
        fs::write(&file, text).map_err(io)?;
    }
    fs::write(dir.join("Cargo.toml"), skeleton::manifest(nn, root_ref)).map_err(io)?;
    // The project's lock file: the same versions as the lessons, built once for both.
    let _ = fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"));
    Ok(())
}

/// `make exercise-NN`'s first half: the learner's copy, created the first time only.
pub fn new(root: &Path, nn: &str) -> Result<String, String> {
    let dir = learner_dir(root, nn);
    if dir.join("Cargo.toml").exists() {
        return Ok(format!("my-exercises/{nn}/ is yours (kept as it is)"));
    }
    write_crate(root, nn, &dir, "../..")?;
    Ok(format!(
        "my-exercises/{nn}/ created from exercises/{nn}/: fill in its todo!()s, then `make check-{nn}`"
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

/// `make reset-NN`: asks on the terminal (`interactive`: stdin is one), keeps the old copy
/// beside, then copies afresh. Without a terminal it refuses: nothing is lost unasked.
pub fn reset(root: &Path, nn: &str, interactive: bool) -> Result<String, String> {
    let dir = learner_dir(root, nn);
    if !dir.exists() {
        return new(root, nn);
    }
    if !interactive {
        return Err(format!(
            "reset-{nn} replaces my-exercises/{nn}/ and asks first: run it in a terminal"
        ));
    }
    print!("Replace my-exercises/{nn}/ with the pristine skeleton? Your copy is kept as my-exercises/{nn}.old/ [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Ok("nothing changed".into());
    }
    let old = root.join("my-exercises").join(format!("{nn}.old"));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| format!("{}: {e}", old.display()))?;
    }
    fs::rename(&dir, &old).map_err(|e| format!("{}: {e}", dir.display()))?;
    new(root, nn)?;
    Ok(format!(
        "my-exercises/{nn}/ is the pristine skeleton again; your copy is my-exercises/{nn}.old/"
    ))
}

/// Prints the walk's header and lines; returns it.
pub fn check_binary(ex: &Exercise, exe: &Path, args: &[String]) -> Walk {
    println!("check {} · {} · {}", ex.nn, ex.title, exe.display());
    check::walk(ex, exe, args, &mut |line| println!("{line}"))
}
