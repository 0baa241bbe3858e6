//! diagram: one picture of a lesson's connection. `make diagram-NN` runs lesson NN under the
//! stepper (`step --record`) in a network namespace of its own, talks to it with a scripted
//! client (the session its docs page describes) that writes down its own calls, captures
//! the packets on that namespace's loopback, and draws the three together as one SVG
//! sequence diagram: the client's calls, the packets between, the lesson's calls, each
//! side's TCP state where it changes. docs/diagrams/ holds one per lesson, with the rows it
//! was drawn from (`.rows`), which `diagram --render` draws again.

mod capture;
mod model;
mod party;
mod script;
mod svg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

/// Draw lesson NN's connection as an SVG sequence diagram (docs/diagrams/NN-topic.svg),
/// from a real run: the lesson under the stepper, a scripted client, the packets captured
/// in a network namespace of the diagram's own (so it runs as root, or under `unshare -rn`).
/// With --render, draw again from a `.rows` file instead (no run).
#[derive(Parser)]
#[command(name = "diagram")]
struct Args {
    /// The lesson's number (00, 01, ...).
    #[arg(required_unless_present_any = ["render", "list"])]
    lesson: Option<String>,

    /// The stepper binary.
    #[arg(long, default_value = "target/release/step")]
    step: PathBuf,

    /// Where the lesson binaries are (lesson-NN).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,

    /// The calls the stepper records (the lesson's trace filter, as `make step-NN` passes it).
    #[arg(long, value_name = "CALLS")]
    calls: Option<String>,

    /// Where the .svg and .rows go.
    #[arg(long, default_value = "docs/diagrams")]
    out_dir: PathBuf,

    /// Print the lessons that have a scripted session, and stop.
    #[arg(long)]
    list: bool,

    /// Draw FILE.rows again as FILE.svg (no run; several files may be given).
    #[arg(long, value_name = "FILE.rows", num_args = 1..)]
    render: Vec<PathBuf>,

    /// The lesson's own flags, after `--` (`-- --mistake plain-close`).
    #[arg(last = true)]
    lesson_args: Vec<String>,
}

/// The wall clock in ns since the epoch (the kernel's packet stamps use the same clock).
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn die(msg: &str) -> ! {
    eprintln!("diagram: {msg}");
    exit(1);
}

/// lessons/NN-topic.rs or lessons/NN-topic/: (the topic, the header's title).
fn lesson_info(nn: &str) -> Option<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir("lessons")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{nn}-")))
        .collect();
    names.sort();
    let name = names.first()?;
    let topic = name.trim_end_matches(".rs").to_string();
    let main = if name.ends_with(".rs") {
        PathBuf::from("lessons").join(name)
    } else {
        PathBuf::from("lessons").join(name).join("main.rs")
    };
    let first = std::fs::read_to_string(main).ok()?;
    let title = first
        .lines()
        .next()?
        .trim_start_matches("//!")
        .trim()
        .trim_end_matches('.')
        .to_string();
    Some((topic, title))
}

fn render_file(rows: &Path) {
    let text = std::fs::read_to_string(rows)
        .unwrap_or_else(|e| die(&format!("cannot read {}: {e}", rows.display())));
    let d = model::from_text(&text).unwrap_or_else(|e| die(&format!("{}: {e}", rows.display())));
    let out = rows.with_extension("svg");
    std::fs::write(&out, svg::render(&d))
        .unwrap_or_else(|e| die(&format!("cannot write {}: {e}", out.display())));
}

fn main() {
    let args = Args::parse();
    if args.list {
        let mut nns: Vec<String> = std::fs::read_dir("lessons")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter_map(|n| n.get(..2).map(str::to_string))
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .filter(|n| script::session(n).is_some())
                    .collect()
            })
            .unwrap_or_default();
        nns.sort();
        nns.dedup();
        println!("{}", nns.join(" "));
        return;
    }
    if !args.render.is_empty() {
        for f in &args.render {
            render_file(f);
        }
        return;
    }
    let nn = args.lesson.clone().unwrap_or_default();
    let (topic, title) = lesson_info(&nn).unwrap_or_else(|| {
        die(&format!(
            "no lesson {nn} in lessons/ (run it from the repository's root)"
        ))
    });
    let session = script::session(&nn)
        .unwrap_or_else(|| die(&format!("no scripted session for lesson {nn} yet")));
    let mistake = args
        .lesson_args
        .iter()
        .position(|a| a == "--mistake")
        .and_then(|i| args.lesson_args.get(i + 1))
        .cloned()
        .or_else(|| {
            args.lesson_args
                .iter()
                .find_map(|a| a.strip_prefix("--mistake=").map(str::to_string))
        });
    let lesson_bin = args.bin_dir.join(format!("lesson-{nn}"));
    if !lesson_bin.is_file() || !args.step.is_file() {
        die(&format!(
            "{} or {} is missing: build them first (make diagram-{nn} does)",
            lesson_bin.display(),
            args.step.display()
        ));
    }

    // The namespace first, while this process has one thread.
    capture::enter_private_net().unwrap_or_else(|e| die(&e));
    let cap = capture::Capture::start().unwrap_or_else(|e| die(&e));
    let journal: party::Shared = Arc::new(Mutex::new(party::Journal::default()));
    let listening: Vec<_> = session.servers.iter().map(|s| s.listen(&journal)).collect();
    // The peers listen before the lesson starts: nothing after this comes before it.
    journal.lock().unwrap().barriers.push(now_ns());
    for start in listening {
        start();
    }

    let record = std::env::temp_dir().join(format!("diagram-{nn}-{}.rec", std::process::id()));
    let mut cmd = Command::new(&args.step);
    cmd.arg("--record").arg(&record);
    if let Some(calls) = &args.calls {
        // Only the calls a diagram shows are recorded (each recorded stop costs time).
        let only: Vec<&str> = calls
            .split(',')
            .filter(|c| model::SHOWN.contains(c))
            .collect();
        cmd.arg("--only").arg(only.join(","));
    } else if !session.also.is_empty() {
        let only: Vec<&str> = model::SHOWN.iter().chain(session.also).copied().collect();
        cmd.arg("--only").arg(only.join(","));
    }
    cmd.arg("--")
        .arg(&lesson_bin)
        .args(&session.lesson_args)
        .args(&args.lesson_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", args.step.display())));
    let ready = Arc::new(Mutex::new(false));
    let stderr = child.stderr.take().unwrap();
    let (r, log) = (ready.clone(), Arc::new(Mutex::new(Vec::<String>::new())));
    let log2 = log.clone();
    let banner = session.banner;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(banner) {
                *r.lock().unwrap() = true;
            }
            log2.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !*ready.lock().unwrap() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            die(&format!(
                "lesson {nn} did not say \"{banner}\" in time; it said:\n{}",
                log.lock().unwrap().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    {
        let (j, seen, rec, pid, busy) = (
            journal.clone(),
            cap.seen.clone(),
            record.clone(),
            child.id() as i32,
            session.busy,
        );
        journal.lock().unwrap().quiet = Some(Arc::new(move || {
            script::settle(&j, &seen, &rec, pid, busy, Duration::from_millis(40))
        }));
    }
    let ctx = script::Ctx {
        journal: journal.clone(),
        seen: cap.seen.clone(),
        record: record.clone(),
        tracer: child.id() as i32,
        busy: session.busy,
        stdin: Mutex::new(child.stdin.take()),
    };
    ctx.settle();
    (session.client)(&ctx, mistake.as_deref());
    ctx.settle();
    // The last packets of a close (an ACK, a FIN after a timeout) before the capture ends.
    script::settle(
        &journal,
        &cap.seen,
        &record,
        child.id() as i32,
        session.busy,
        Duration::from_millis(400),
    );
    // SIGKILL to the stepper: PTRACE_O_EXITKILL takes the lesson with it.
    journal.lock().unwrap().quiet = None;
    let _ = child.kill();
    let _ = child.wait();
    let frames = cap.finish();
    let text = std::fs::read_to_string(&record).unwrap_or_default();
    let _ = std::fs::remove_file(&record);

    let mut threads = Vec::new();
    // The first process is the lesson; with `others`, each process it starts has a lane of
    // its own (the record's third field is the process id).
    let mut first: Option<String> = None;
    let mut calls: Vec<party::Call> = text
        .lines()
        .filter_map(|l| {
            let tgid = l.split('\t').nth(2).unwrap_or("").to_string();
            let first = first.get_or_insert_with(|| tgid.clone());
            let lane = match session.others {
                Some(other) if *first != tgid => other,
                _ => session.traced,
            };
            model::traced_call(l, lane, &mut threads)
        })
        .filter(|c| {
            let said = format!("{}:{} = {}", c.lane, c.name, c.result);
            !session.left_out.iter().any(|p| said.starts_with(p))
        })
        .map(|mut c| {
            for (from, to) in session.same {
                c.result = c.result.replace(from, to);
            }
            c
        })
        .collect();
    let (mut more, notes, barriers) = {
        let j = journal.lock().unwrap();
        (j.calls.clone(), j.notes.clone(), j.barriers.clone())
    };
    calls.append(&mut more);
    let rows = model::build(
        calls,
        &frames,
        notes,
        &barriers,
        session.busy,
        session.fences,
    );
    let suffix = mistake
        .as_deref()
        .map_or(String::new(), |m| format!("-{m}"));
    let d = model::Diagram {
        title: format!(
            "{title}{}",
            mistake
                .as_deref()
                .map_or(String::new(), |m| format!(" · --mistake {m}"))
        ),
        subtitle: format!(
            "make diagram-{nn}{}: {}",
            if suffix.is_empty() {
                String::new()
            } else {
                format!(" ARGS='--mistake {}'", mistake.as_deref().unwrap_or(""))
            },
            session.about
        ),
        lanes: session.lanes.clone(),
        rows,
    };
    std::fs::create_dir_all(&args.out_dir)
        .unwrap_or_else(|e| die(&format!("cannot make {}: {e}", args.out_dir.display())));
    let base = args.out_dir.join(format!("{topic}{suffix}"));
    let rows_path = base.with_extension("rows");
    std::fs::write(&rows_path, model::to_text(&d))
        .unwrap_or_else(|e| die(&format!("cannot write {}: {e}", rows_path.display())));
    render_file(&rows_path);
    eprintln!(
        "diagram: {} ({} rows, {} packets)",
        base.with_extension("svg").display(),
        d.rows.len(),
        frames.len()
    );
}
