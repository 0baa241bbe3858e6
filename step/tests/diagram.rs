//! The diagrams of docs/diagrams/ (`make diagram-NN`, step/src/diagram/), as a person sees
//! them and as the docs use them:
//! - every committed SVG is its `.rows` drawn again, byte for byte (a change to the drawing
//!   without `make diagrams` fails here, as a stale code snippet fails the docs test);
//! - real runs of a representative few lessons (the hello, the plain close's reset, the
//!   relay's two connections, its datagrams) draw the committed rows again, twice over: the
//!   pictures are current and the same from run to run. All 20 take under a minute with
//!   `make diagrams`; these four, a few seconds, and they cover the four kinds of session
//!   (one client, the reset, three lanes, UDP);
//! - each lesson page shows its diagram at the start of "What the trace shows";
//! - the pictures say what happened: the lanes, SYN, FIN and RST, the states in order;
//! - every SVG renders with rsvg-convert, and a page with one, screenshotted in headless
//!   Chromium, is not blank.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn diagrams() -> PathBuf {
    root().join("docs/diagrams")
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(diagrams())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// A directory of the test's own under the temp dir, removed when dropped.
struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("diagram-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_committed_svg_is_its_rows_drawn_again() {
    let rows = files("rows");
    assert!(
        rows.len() >= 17,
        "docs/diagrams/ holds {} .rows files",
        rows.len()
    );
    let svgs = files("svg");
    assert_eq!(
        rows.iter()
            .map(|p| p.with_extension(""))
            .collect::<Vec<_>>(),
        svgs.iter()
            .map(|p| p.with_extension(""))
            .collect::<Vec<_>>(),
        "every .svg has its .rows and every .rows its .svg"
    );
    let tmp = tmpdir("render");
    let copies: Vec<PathBuf> = rows
        .iter()
        .map(|r| {
            let c = tmp.join(r.file_name().unwrap());
            std::fs::copy(r, &c).unwrap();
            c
        })
        .collect();
    let st = Command::new(env!("CARGO_BIN_EXE_diagram"))
        .arg("--render")
        .args(&copies)
        .status()
        .unwrap();
    assert!(st.success());
    let mut stale = Vec::new();
    for c in &copies {
        let committed = diagrams().join(c.with_extension("svg").file_name().unwrap());
        if read(&c.with_extension("svg")) != read(&committed) {
            stale.push(committed.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale diagrams (their .rows draw something else now): {stale:?}; run `make diagrams`"
    );
}

/// The lesson binaries beside the diagram binary (`make test` builds every binary first).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_diagram"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One real run into `out`; None (with the reason printed) where this machine cannot make a
/// network namespace.
fn run(nn: &str, args: &[&str], out: &Path) -> Option<()> {
    let lesson = bin_dir().join(format!("lesson-{nn}"));
    assert!(
        lesson.is_file(),
        "{} is missing: build the workspace's binaries first (make test does)",
        lesson.display()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diagram"));
    cmd.current_dir(root())
        .arg(nn)
        .arg("--step")
        .arg(env!("CARGO_BIN_EXE_step"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out-dir")
        .arg(out);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let o = cmd.stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("unshare(CLONE_NEWNET)") {
        eprintln!("skipped: no network namespace here (run as root, as CI does): {err}");
        return None;
    }
    assert!(o.status.success(), "diagram {nn} {args:?} failed: {err}");
    Some(())
}

#[test]
fn real_runs_draw_the_committed_pictures_every_time() {
    let cases: [(&str, &[&str], &str); 4] = [
        ("01", &[], "01-hello"),
        (
            "03",
            &["--mistake", "plain-close"],
            "03-interactive-plain-close",
        ),
        ("12", &[], "12-socks5"),
        ("16", &[], "16-socks5-udp"),
    ];
    for (nn, args, name) in cases {
        let (a, b) = (tmpdir(&format!("{nn}a")), tmpdir(&format!("{nn}b")));
        if run(nn, args, &a).is_none() {
            return;
        }
        run(nn, args, &b).unwrap();
        for ext in ["rows", "svg"] {
            let file = format!("{name}.{ext}");
            let (x, y) = (read(&a.join(&file)), read(&b.join(&file)));
            assert!(
                x == y,
                "two runs of diagram-{nn} drew different {file}: {}",
                first_difference(&x, &y)
            );
            let committed = read(&diagrams().join(&file));
            assert!(
                x == committed,
                "docs/diagrams/{file} is stale: the lesson now draws another picture; run \
                 `make diagrams`. Committed, then drawn: {}",
                first_difference(&committed, &x)
            );
        }
    }
}

/// The first line where two drawings part, with the line before it: what a failure shows.
fn first_difference(x: &str, y: &str) -> String {
    let (xs, ys): (Vec<&str>, Vec<&str>) = (x.lines().collect(), y.lines().collect());
    let at = (0..xs.len().max(ys.len()))
        .find(|&i| xs.get(i) != ys.get(i))
        .unwrap_or(0);
    let line = |v: &[&str], i: usize| v.get(i).copied().unwrap_or("(the end)").to_string();
    format!(
        "line {}: after {:?}, {:?} against {:?}",
        at + 1,
        line(&xs, at.wrapping_sub(1)),
        line(&xs, at),
        line(&ys, at)
    )
}

fn lesson_pages() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("docs/lessons"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.as_bytes()[0].is_ascii_digit() && n.ends_with(".md"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_lesson_page_shows_its_diagram_first_in_what_the_trace_shows() {
    let pages = lesson_pages();
    assert!(pages.len() >= 16);
    // The lessons the diagram has a scripted session for; a page of another lesson (one
    // just added) is named, not failed: its session comes with its picture.
    let listed = Command::new(env!("CARGO_BIN_EXE_diagram"))
        .current_dir(root())
        .arg("--list")
        .output()
        .unwrap();
    let sessions = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        sessions.split_whitespace().count() >= 16,
        "diagram --list: {sessions}"
    );
    for page in pages {
        let topic = page.file_stem().unwrap().to_str().unwrap().to_string();
        if !sessions
            .split_whitespace()
            .any(|n| topic.starts_with(&format!("{n}-")))
        {
            eprintln!(
                "{topic}: no scripted session in step/src/diagram/script.rs yet, so no picture"
            );
            continue;
        }
        let text = read(&page);
        let at = text
            .find("\n## What the trace shows\n")
            .unwrap_or_else(|| panic!("{topic}: no \"## What the trace shows\""));
        let mut lines = text[at + 1..]
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty());
        assert_eq!(
            lines.next(),
            Some("### The picture"),
            "{topic}: \"What the trace shows\" starts with \"### The picture\""
        );
        let image = lines.next().unwrap_or("");
        let want = format!("(../diagrams/{topic}.svg)");
        assert!(
            image.starts_with("![") && image.ends_with(&want),
            "{topic}: the picture's line is `![...]{want}`, not {image:?}"
        );
        assert!(diagrams().join(format!("{topic}.svg")).is_file());
        let sentence = lines.next().unwrap_or("");
        assert!(
            !sentence.starts_with('#') && sentence.len() > 20,
            "{topic}: one sentence follows the picture"
        );
    }
}

/// The texts of the SVG elements of `class` (in document order) on lane `lane` (any: None).
fn texts(svg: &str, class: &str, lane: Option<usize>) -> Vec<String> {
    let open = format!("<g class=\"{class}\"");
    let mut out = Vec::new();
    for part in svg.split(&open).skip(1) {
        let group = &part[..part.find("</g>").unwrap()];
        if let Some(l) = lane {
            if !group.starts_with(&format!(" data-lane=\"{l}\"")) {
                continue;
            }
        }
        for t in group.split("<text").skip(1) {
            let t = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            out.push(
                t.replace("&gt;", ">")
                    .replace("&lt;", "<")
                    .replace("&amp;", "&"),
            );
        }
    }
    out
}

/// The states of connection `conn` on `lane`, in order (conn None: a one-connection picture).
fn states(svg: &str, lane: usize, conn: Option<&str>) -> Vec<String> {
    texts(svg, "state", Some(lane))
        .into_iter()
        .filter_map(|t| match conn {
            Some(c) => t.strip_prefix(&format!("{c} ")).map(str::to_string),
            None => Some(t),
        })
        .collect()
}

#[test]
fn the_pictures_say_what_happened() {
    let hello = read(&diagrams().join("01-hello.svg"));
    let lanes = texts(&hello, "lane", None);
    assert_eq!(lanes[0], "client");
    assert_eq!(lanes[2], "lesson-01");
    let packets = texts(&hello, "packet syn", None);
    assert_eq!(packets[0], "SYN");
    assert_eq!(packets[2], "SYN-ACK");
    assert!(hello.contains("<g class=\"packet fin\""));
    assert!(!hello.contains("<g class=\"packet rst\""));
    // The server closes first: it goes through FIN_WAIT and ends in TIME_WAIT.
    assert_eq!(
        states(&hello, 0, None),
        [
            "SYN_SENT",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSED"
        ]
    );
    assert_eq!(
        states(&hello, 1, None),
        [
            "LISTEN",
            "SYN_RCVD",
            "ESTABLISHED",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT"
        ]
    );

    // Lesson 03: B's handshake is done by the kernel (B ESTABLISHED on the server's lane)
    // while the server still serves A; its accept returns only after A is gone.
    let inter = read(&diagrams().join("03-interactive.svg"));
    let b_established = inter.find(">B ESTABLISHED<").expect("B's handshake");
    let last_accept = inter
        .rfind(">B: accept(3, NULL, NULL)")
        .expect("B's accept");
    assert!(b_established < last_accept, "B waits in the accept queue");
    assert!(!inter.contains("<g class=\"packet rst\""));
    // The lingering close: shutdown's FIN_WAIT_1, the drain, the client's FIN, TIME_WAIT.
    assert_eq!(
        states(&inter, 1, Some("A")),
        [
            "SYN_RCVD",
            "ESTABLISHED",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT"
        ]
    );
    assert!(inter.contains("shutdown(4, SHUT_WR)"));

    // The plain close: a RST, the replies it destroyed in their own colour, A's read fails.
    let plain = read(&diagrams().join("03-interactive-plain-close.svg"));
    assert!(plain.contains("<g class=\"packet rst\""));
    let lost = texts(&plain, "packet lost", None);
    assert!(
        lost.iter()
            .any(|t| t.contains("never sent: the reset destroyed them")),
        "{lost:?}"
    );
    assert!(plain.contains("ECONNRESET"));
    assert_eq!(states(&plain, 0, Some("A")).last().unwrap(), "CLOSED");

    // The relay: three lanes, two connections, the client's half-close passed on.
    let relay = read(&diagrams().join("12-socks5.svg"));
    let lanes = texts(&relay, "lane", None);
    assert_eq!(
        (lanes[0].as_str(), lanes[2].as_str(), lanes[4].as_str()),
        ("client", "lesson-12", "upstream")
    );
    assert!(relay.contains(">A: SYN<") && relay.contains(">B: SYN<"));
    let relay_b = states(&relay, 1, Some("B"));
    assert_eq!(
        &relay_b[..3],
        ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1"],
        "{relay_b:?}"
    );
    assert_eq!(states(&relay, 2, Some("B"))[2], "CLOSE_WAIT");
    assert!(
        !relay.contains("UDP datagram"),
        "no datagram, no UDP in the legend"
    );

    // UDP ASSOCIATE: the control connection (A), two datagrams each way through the relay,
    // wrapped (B, 10 B of SOCKS header + 4) on the client's side and bare (C) on the echo's,
    // in their own kind, with no TCP state; the client's close ends the association.
    let udp = read(&diagrams().join("16-socks5-udp.svg"));
    let lanes = texts(&udp, "lane", None);
    assert_eq!(
        (lanes[0].as_str(), lanes[2].as_str(), lanes[4].as_str()),
        ("client", "lesson-16", "echo")
    );
    let round = [
        "B: UDP 14 B",
        "port 6000 → B",
        "C: UDP 4 B",
        "port C → 7007",
        "C: UDP 4 B",
        "port 7007 → C",
        "B: UDP 14 B",
        "port B → 6000",
    ];
    assert_eq!(
        texts(&udp, "packet udp", None),
        [round, round].concat(),
        "each datagram there and back, in order"
    );
    assert!(udp.contains("UDP datagram (its length in bytes)"));
    for lane in 0..3 {
        for conn in ["B", "C"] {
            assert!(
                states(&udp, lane, Some(conn)).is_empty(),
                "UDP has no state"
            );
        }
    }
    assert!(texts(&udp, "packet data", None).contains(&"A: data 10 B".to_string()));
    let fin = udp
        .find(">A: FIN<")
        .expect("the client's FIN on the control connection");
    let last_datagram = udp.rfind(">B: UDP 14 B<").unwrap();
    let closed = udp
        .find("close(13) = 0")
        .expect("the relay closes the UDP socket");
    assert!(
        last_datagram < fin && fin < closed,
        "the association ends with A"
    );
    assert_eq!(states(&udp, 0, Some("A")).last().unwrap(), "TIME_WAIT");
    assert_eq!(states(&udp, 1, Some("A")).last().unwrap(), "CLOSED");

    // The restart: the old process sends the listener (SCM_RIGHTS) after SIGHUP, the child's
    // execve is the successor, which receives it and accepts B; the old process drops the
    // listener from its epoll set only after that, and serves A to its end.
    let restart = read(&diagrams().join("17-restart.svg"));
    let lanes = texts(&restart, "lane", None);
    assert_eq!(
        (lanes[0].as_str(), lanes[2].as_str(), lanes[4].as_str()),
        ("client", "lesson-17", "successor")
    );
    let old = texts(&restart, "call", Some(1));
    let new = texts(&restart, "call", Some(2));
    let at = |calls: &[String], what: &str| {
        calls
            .iter()
            .position(|t| t.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in {calls:?}"))
    };
    let all = texts(&restart, "call", None);
    let sent = at(&all, "SCM_RIGHTS [8]}, 0) = 1");
    let exec = at(&all, "lesson-17&quot;, argv, envp) = 0");
    let received = at(&all, "MSG_CMSG_CLOEXEC) = 1 {data");
    let dropped = at(&all, "EPOLL_CTL_DEL, 8");
    assert!(
        sent < exec && exec < received && received < dropped,
        "the handover in order: {all:?}"
    );
    assert!(at(&new, "execve(") < at(&new, "recvmsg("));
    assert!(at(&old, "sendmsg(") < at(&old, "EPOLL_CTL_DEL, 8"));
    // A stays with the old process, B goes to the successor.
    assert!(old.iter().any(|t| t.starts_with("A: accept4(")));
    assert!(!old.iter().any(|t| t.starts_with("B: ")), "{old:?}");
    assert!(new.iter().any(|t| t.starts_with("B: accept4(")));
    assert!(!new.iter().any(|t| t.starts_with("A: ")), "{new:?}");
    assert_eq!(states(&restart, 1, Some("A")).last().unwrap(), "TIME_WAIT");
    assert!(states(&restart, 1, Some("B")).is_empty());
    assert_eq!(states(&restart, 2, Some("B")).last().unwrap(), "TIME_WAIT");
    // A's last exchange with the old process comes after B's with the successor.
    let b_served = restart.find(">B: data 4 B<").expect("B's line");
    let a_finishes = restart.find(">A: data 6 B<").expect("A's last lines");
    assert!(b_served < a_finishes);
    assert!(at(&old, "close(8) = 0") > at(&old, "A: close("));
}

fn have(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

#[test]
fn every_svg_renders_with_rsvg_convert() {
    let Some(rsvg) = have("rsvg-convert") else {
        eprintln!("skipped: no rsvg-convert here (make deps installs librsvg2-bin)");
        return;
    };
    let tmp = tmpdir("rsvg");
    for svg in files("svg") {
        let png = tmp.join(svg.with_extension("png").file_name().unwrap());
        let o = Command::new(&rsvg)
            .arg(&svg)
            .arg("-o")
            .arg(&png)
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "rsvg-convert {}: {}",
            svg.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    }
}

/// How many distinct colours a PNG holds (python3's zlib decodes it: RGB or RGBA, 8 bits).
fn colours(png: &Path) -> usize {
    let script = r#"
import sys, zlib, struct
d = open(sys.argv[1], 'rb').read()
pos, idat, w, h, ct = 8, b'', 0, 0, 0
while pos < len(d):
    n, kind = struct.unpack('>I4s', d[pos:pos+8])
    body = d[pos+8:pos+8+n]
    if kind == b'IHDR':
        w, h, bits, ct = struct.unpack('>IIBB', body[:10])
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
bpp = {2: 3, 6: 4}[ct]
stride = w * bpp
prev = bytearray(stride)
seen = set()
i = 0
for y in range(h):
    f = raw[i]; line = bytearray(raw[i+1:i+1+stride]); i += 1 + stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0
        b = prev[x]; c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    if y % 4 == 0:
        for x in range(0, stride, bpp * 3):
            seen.add(bytes(line[x:x+3]))
    prev = line
print(len(seen))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(png)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn a_page_with_a_diagram_screenshotted_in_chromium_is_not_blank() {
    let Some(browser) = have("chromium").or_else(|| have("chromium-browser")) else {
        eprintln!("skipped: no chromium here (make deps installs Debian's chromium package)");
        return;
    };
    let tmp = tmpdir("chromium");
    let svg = diagrams().join("03-interactive-plain-close.svg");
    let page = tmp.join("page.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><body style=\"margin:0;background:#fff\">\
             <h1 style=\"font-family:sans-serif\">Lesson 03</h1>\
             <img src=\"file://{}\" style=\"width:1000px\"></body></html>",
            svg.display()
        ),
    )
    .unwrap();
    let png = tmp.join("shot.png");
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg("--allow-file-access-from-files")
        .arg("--window-size=1000,900")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        png.is_file(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A blank page is one colour; the diagram's lanes, arrows and tags are many.
    let n = colours(&png);
    assert!(
        n >= 8,
        "the screenshot holds {n} colours: the diagram did not show"
    );
}
