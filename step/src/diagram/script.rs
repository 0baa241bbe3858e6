//! The sessions: for each lesson, the lanes, the scripted peers (a client, an upstream
//! server, a Redis) and what they do, the session its docs page describes. Between steps
//! the client waits until everything is quiet (no packet, no call, every thread of the
//! lesson asleep), so each run puts the same things in the same order.

use std::io::Write;
use std::path::PathBuf;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::party::{quoted, Peer, Shared};

/// What a run needs to know while the script plays.
pub struct Ctx {
    pub journal: Shared,
    pub seen: Arc<AtomicUsize>,
    pub record: PathBuf,
    /// The stepper's pid: the lesson's processes are its descendants.
    pub tracer: i32,
    /// The lesson never sleeps (busy polling): quiet means no packets and no peer's call.
    pub busy: bool,
    pub stdin: Mutex<Option<ChildStdin>>,
}

/// Every thread of `pid` and of its descendants: (pid, state letter).
fn tree(pid: i32, out: &mut Vec<char>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.filter_map(|e| e.ok()) {
        let tid = t.file_name().to_string_lossy().into_owned();
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
            if let Some((_, rest)) = stat.rsplit_once(')') {
                out.push(rest.trim_start().chars().next().unwrap_or('?'));
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                tree(c, out);
            }
        }
    }
}

/// Wait until nothing has happened for `quiet`: no new packet, no new call recorded or
/// logged, and (unless busy) every thread of the stepper and the lesson asleep. Then mark
/// the moment: nothing after it caused anything before it.
pub fn settle(
    journal: &Shared,
    seen: &AtomicUsize,
    record: &std::path::Path,
    tracer: i32,
    busy: bool,
    quiet: Duration,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let sample = || {
        let calls = journal.lock().unwrap().calls.len();
        let rec = if busy {
            0
        } else {
            std::fs::metadata(record).map_or(0, |m| m.len())
        };
        (seen.load(Ordering::SeqCst), calls, rec)
    };
    let mut last = sample();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let now = sample();
        let mut states = Vec::new();
        if !busy {
            tree(tracer, &mut states);
        }
        let asleep = states.iter().all(|s| matches!(s, 'S' | 'D' | 'Z'));
        if now != last || !asleep {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    journal.lock().unwrap().barriers.push(crate::now_ns());
}

impl Ctx {
    /// The script's wait between its steps: longer than a peer's (see [`settle`]), so a
    /// peer's answer always comes first.
    pub fn settle(&self) {
        let quiet = Duration::from_millis(if self.busy { 250 } else { 150 });
        settle(
            &self.journal,
            &self.seen,
            &self.record,
            self.tracer,
            self.busy,
            quiet,
        );
    }

    /// A short wait, where a long one would let a kernel timer in (see its caller).
    pub fn settle_quick(&self) {
        settle(
            &self.journal,
            &self.seen,
            &self.record,
            self.tracer,
            self.busy,
            Duration::from_millis(50),
        );
    }

    /// Sends `sig` to the lesson: the stepper's child.
    pub fn signal(&self, sig: i32) {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.tracer))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            // SAFETY: kill(2) of the lesson's process, a child of the stepper we started.
            unsafe { libc::kill(pid, sig) };
        }
    }

    pub fn peer(&self, lane: usize, who: &str) -> Peer {
        Peer::new(lane, who, &self.journal)
    }

    /// Lines for a lesson that reads its stdin (lesson 00); None closes it (end of input).
    pub fn type_in(&self, text: Option<&[u8]>) {
        let mut stdin = self.stdin.lock().unwrap();
        match text {
            Some(t) => {
                if let Some(s) = stdin.as_mut() {
                    let _ = s.write_all(t);
                    let _ = s.flush();
                }
            }
            None => {
                stdin.take();
            }
        }
    }
}

/// A scripted server started before the lesson: listens on `port`, then plays `run`.
pub struct Server {
    pub lane: usize,
    pub port: u16,
    /// A UDP socket bound to `port` instead of a listener.
    pub udp: bool,
    pub run: fn(&Peer, i32),
}

impl Server {
    /// Listens; the returned closure plays the rest on a thread of its own.
    pub fn listen(&self, journal: &Shared) -> impl FnOnce() {
        let peer = Peer::new(self.lane, "server", journal);
        let fd = if self.udp {
            let fd = peer.udp_socket();
            peer.bind(fd, self.port);
            fd
        } else {
            peer.listen(self.port)
        };
        let run = self.run;
        move || {
            std::thread::spawn(move || run(&peer, fd));
        }
    }
}

type Client = fn(&Ctx, Option<&str>);

pub struct Session {
    pub lanes: Vec<(String, String)>,
    /// The lane of the lesson (its calls come from the stepper).
    pub traced: usize,
    pub lesson_args: Vec<String>,
    /// What the lesson says on stderr once it is ready.
    pub banner: &'static str,
    pub servers: Vec<Server>,
    pub client: Client,
    pub busy: bool,
    pub about: String,
    /// Calls to record beyond the stepper's default stops (the diagram's shown calls then).
    pub also: &'static [&'static str],
    /// Returns that follow from another process or thread of the traced lane, not from a
    /// packet (see model::build): `name = result` containing one of these.
    pub fences: &'static [&'static str],
    /// The lane of the traced processes after the first (lesson 17's successor); None: the
    /// traced lane holds them all, one slot each.
    pub others: Option<usize>,
    /// Calls left out of the picture (`lane:name = result` starting with one of these): a
    /// wait's timeouts, as many as the machine's speed makes; a call that races another
    /// process's and is drawn on either side of it from run to run.
    pub left_out: &'static [&'static str],
    /// A result's text that one run shows and another not, rewritten as (from, to).
    pub same: &'static [(&'static str, &'static str)],
}

fn lanes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub fn session(nn: &str) -> Option<Session> {
    let lesson = format!("lesson-{nn}");
    let about_server = "the client is a script, the lesson runs under the stepper, \
                        the packets are captured on a loopback of its own";
    let s = match nn {
        "00" => Session {
            lanes: lanes(&[(&lesson, "the client, traced"), ("server", "a script")]),
            traced: 0,
            lesson_args: vec![],
            banner: "connected",
            servers: vec![Server {
                lane: 1,
                port: 23333,
                udp: false,
                run: echo_server,
            }],
            client: typist,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: "the lesson is the client (under the stepper), the server is a script".into(),
        },
        "01" | "02" => Session {
            lanes: lanes(&[("client", "a script"), (&lesson, "the server, traced")]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![],
            client: if nn == "01" { hello } else { serial_hello },
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: about_server.into(),
        },
        "03" => Session {
            lanes: lanes(&[
                ("client", "a script: clients A and B"),
                (&lesson, "the server, traced"),
            ]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![],
            client: interactive_clients,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: about_server.into(),
        },
        "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "15" => Session {
            lanes: lanes(&[
                ("client", "a script: clients A and B"),
                (&lesson, "the server, traced"),
            ]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![],
            client: echo_clients,
            busy: nn == "06",
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: about_server.into(),
        },
        "12" | "14" => Session {
            lanes: lanes(&[
                ("client", "a script"),
                (&lesson, "the relay, traced"),
                ("upstream", "a script"),
            ]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![Server {
                lane: 2,
                port: UPSTREAM,
                udp: false,
                run: upstream,
            }],
            client: socks_client,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: "client and upstream are scripts, the relay runs under the stepper".into(),
        },
        "13" => Session {
            lanes: lanes(&[
                ("client", "a script"),
                (&lesson, "the relay, traced"),
                ("upstream", "a script"),
                ("Redis", "a script answering GET"),
            ]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![
                Server {
                    lane: 2,
                    port: UPSTREAM,
                    udp: false,
                    run: upstream,
                },
                Server {
                    lane: 3,
                    port: 6379,
                    udp: false,
                    run: redis,
                },
            ],
            client: socks_client,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: "client, upstream and Redis are scripts, the relay runs under the stepper"
                .into(),
        },
        "16" => Session {
            lanes: lanes(&[
                ("client", "a script"),
                (&lesson, "the relay, traced"),
                ("echo", "a script: UDP echo"),
            ]),
            traced: 1,
            // One datagram a call (recvfrom, sendto), where recvmmsg/sendmmsg take a batch.
            lesson_args: vec!["--no-batch".into()],
            banner: "listening on",
            servers: vec![Server {
                lane: 2,
                port: UDP_ECHO,
                udp: true,
                run: udp_echo,
            }],
            client: udp_client,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: "client and UDP echo are scripts, the relay runs under the stepper (--no-batch)"
                .into(),
        },
        "17" => Session {
            lanes: lanes(&[
                ("client", "a script: clients A and B"),
                (&lesson, "the old process, traced"),
                ("successor", "lesson-17 again (execve), traced"),
            ]),
            traced: 1,
            lesson_args: vec![],
            banner: "listening on",
            servers: vec![],
            client: restart_clients,
            busy: false,
            about: "the client is a script that also sends SIGHUP; both processes run under the stepper"
                .into(),
            also: &["execve"],
            // The successor has the listener (recvmsg); the old process hears it is ready
            // (poll on its end of the socketpair, fd 14), and only then drains.
            fences: &["recvmsg = ", "poll = 1 [{fd=14, revents=POLLIN"],
            others: Some(2),
            // While the successor starts, the restart thread wakes every 100 ms (poll = 0)
            // to ask whether it is gone (wait4 WNOHANG = 0): how often depends on the load.
            // The successor's clone3 (its own restart thread) comes after its "R", so before
            // or after the old process wakes to it, as the scheduler has it.
            left_out: &["1:poll = 0", "1:wait4 = 0", "2:clone3 = "],
            // The successor writes "R" and closes its end: whether the old one wakes before
            // the close (POLLIN) or after (POLLIN|POLLHUP) is the scheduler's choice.
            same: &[("{fd=14, revents=POLLIN|POLLHUP}", "{fd=14, revents=POLLIN}")],
        },
        "18" => Session {
            lanes: lanes(&[
                ("client", "a script"),
                ("server", "a script"),
                (&lesson, "the capture, traced"),
            ]),
            traced: 2,
            lesson_args: vec!["--port".into(), "23333".into()],
            banner: "capturing on",
            servers: vec![Server {
                lane: 1,
                port: 23333,
                udp: false,
                run: echo_server,
            }],
            client: capture_client,
            busy: false,
            also: &[],
            fences: &[],
            others: None,
            left_out: &[],
            same: &[],
            about: "client and server are scripts, the capture runs under the stepper".into(),
        },
        _ => return None,
    };
    Some(s)
}

const UPSTREAM: u16 = 8000;
/// Lesson 16: the UDP echo peer's port, and the port the client's datagrams come from.
const UDP_ECHO: u16 = 7007;
const CLIENT_UDP: u16 = 6000;

/// Lesson 01: read the greeting, then the end of the stream, close.
fn hello(ctx: &Ctx, _: Option<&str>) {
    let c = ctx.peer(0, "A");
    let fd = c.socket();
    c.connect(fd, 23333);
    ctx.settle();
    c.read(fd);
    c.read(fd);
    c.close(fd);
}

/// Lesson 02: two clients, one after the other.
fn serial_hello(ctx: &Ctx, m: Option<&str>) {
    hello(ctx, m);
    ctx.settle();
    let c = ctx.peer(0, "B");
    let fd = c.socket();
    c.connect(fd, 23333);
    ctx.settle();
    c.read(fd);
    c.read(fd);
    c.close(fd);
}

/// The echo lessons: A talks; B connects while A is served; A quits with a line typed
/// after its `q`; B is served and quits.
fn echo_clients(ctx: &Ctx, _: Option<&str>) {
    let a = ctx.peer(0, "A");
    let fa = a.socket();
    a.connect(fa, 23333);
    ctx.settle();
    a.read(fa);
    a.write(fa, b"hi\n");
    ctx.settle();
    a.read(fa);
    a.note("client B connects while the server is busy with A");
    let b = ctx.peer(0, "B");
    let fb = b.socket();
    b.connect(fb, 23333);
    ctx.settle();
    a.note("A sends its last line and q, then one more line before reading");
    a.write(fa, b"bye\nq\n");
    ctx.settle();
    a.write(fa, b"late\n");
    ctx.settle();
    let got = a.read(fa);
    if !got.is_empty() {
        a.read(fa);
    }
    a.close(fa);
    ctx.settle();
    a.note("now B");
    b.read(fb);
    b.write(fb, b"q\n");
    ctx.settle();
    b.read(fb);
    b.close(fb);
}

/// Lesson 03: as the echo lessons, but A reads slowly (a small receive buffer) and its
/// last line is long, so the reply waits in the server's send queue when A sends one more
/// line after its `q`: the lingering close drains it, the plain close resets and loses it.
fn interactive_clients(ctx: &Ctx, _: Option<&str>) {
    let a = ctx.peer(0, "A");
    let fa = a.socket();
    a.rcvbuf(fa, 1024);
    a.connect(fa, 23333);
    ctx.settle();
    a.read(fa);
    a.write(fa, b"hi\n");
    ctx.settle();
    a.read(fa);
    a.note("client B connects while the server is busy with A: the kernel completes it");
    let b = ctx.peer(0, "B");
    let fb = b.socket();
    b.connect(fb, 23333);
    ctx.settle();
    a.note("A sends a long line and q, and one more line before reading the reply");
    let mut long = vec![b'x'; 3000];
    long.extend_from_slice(b"\nq\n");
    a.write(fa, &long);
    // Quick: with its reply stuck behind A's small window, the server's kernel probes the
    // window 200 ms on (the persist timer), and the probe's answer would let more through.
    ctx.settle_quick();
    a.write(fa, b"late\n");
    ctx.settle();
    a.note("A reads what came");
    // No waiting between these reads: on loopback each read's window update brings the
    // next bytes before it returns, and the lingering server waits 1 s at most.
    for _ in 0..12 {
        if a.read(fa).is_empty() {
            break;
        }
    }
    a.close(fa);
    ctx.settle();
    a.note("now the server accepts B");
    b.read(fb);
    b.write(fb, b"q\n");
    ctx.settle();
    b.read(fb);
    b.close(fb);
}

/// The upstream of the relays: answer the line in capitals, and after the client's
/// half-close (passed on by the relay) one more line, then close.
fn upstream(p: &Peer, listener: i32) {
    let fd = p.accept(listener);
    if fd < 0 {
        return;
    }
    let line = p.read(fd);
    p.write(fd, &line.to_ascii_uppercase());
    p.read(fd);
    p.write(fd, b"bye\n");
    p.close(fd);
}

/// Redis as lesson 13 needs it: every GET is answered "1" (allowed).
fn redis(p: &Peer, listener: i32) {
    let fd = p.accept(listener);
    if fd < 0 {
        return;
    }
    loop {
        let got = p.read(fd);
        if got.is_empty() {
            break;
        }
        let gets = got.windows(3).filter(|w| w == b"GET").count().max(1);
        p.write(fd, &b"$1\r\n1\r\n".repeat(gets));
    }
    p.close(fd);
}

/// Through the relay: the SOCKS5 greeting and CONNECT to the upstream, a line each way,
/// the client's half-close, the upstream's last line, both ends closed.
fn socks_client(ctx: &Ctx, _: Option<&str>) {
    let c = ctx.peer(0, "A");
    let fd = c.socket();
    c.connect(fd, 1080);
    ctx.settle();
    c.write(fd, &[5, 1, 0]);
    ctx.settle();
    c.read(fd);
    let [hi, lo] = UPSTREAM.to_be_bytes();
    c.write(fd, &[5, 1, 0, 1, 127, 0, 0, 1, hi, lo]);
    ctx.settle();
    c.read(fd);
    c.write(fd, b"hello\n");
    ctx.settle();
    c.read(fd);
    c.note("half-close: the client has nothing more to send, but still reads");
    c.shutdown_wr(fd);
    ctx.settle();
    c.read(fd);
    c.read(fd);
    c.close(fd);
}

/// The server lesson 00 talks to: the echo protocol's welcome and one reversed line.
fn echo_server(p: &Peer, listener: i32) {
    let fd = p.accept(listener);
    if fd < 0 {
        return;
    }
    p.write(fd, b"Welcome buddy!\n");
    loop {
        let got = p.read(fd);
        if got.is_empty() {
            break;
        }
        let mut rev: Vec<u8> = got.trim_ascii_end().iter().rev().copied().collect();
        rev.push(b'\n');
        p.write(fd, &rev);
    }
    p.close(fd);
}

/// Lesson 00: a line typed, then the end of input (Ctrl-D).
fn typist(ctx: &Ctx, _: Option<&str>) {
    ctx.settle();
    let p = ctx.peer(0, "typist");
    p.note("the user types a line");
    ctx.type_in(Some(b"hello\n"));
    ctx.settle();
    p.note("the user ends the input (Ctrl-D)");
    ctx.type_in(None);
    ctx.settle();
}

/// Lesson 18: a short connection on the port it watches.
fn capture_client(ctx: &Ctx, _: Option<&str>) {
    let c = ctx.peer(0, "A");
    let fd = c.socket();
    c.connect(fd, 23333);
    ctx.settle();
    c.read(fd);
    c.write(fd, b"hi\n");
    ctx.settle();
    c.read(fd);
    c.close(fd);
}

/// Lesson 16's echo peer: each datagram back to where it came from, two of them.
fn udp_echo(p: &Peer, fd: i32) {
    for _ in 0..2 {
        let (got, port) = p.recvfrom(fd);
        if got.is_empty() {
            return;
        }
        p.sendto(fd, &got, port, &quoted(&got, 24));
    }
}

/// Lesson 16: the greeting and UDP ASSOCIATE on the control connection, two datagrams
/// through the relay (each wrapped in a SOCKS5 UDP header naming the echo peer) and their
/// wrapped replies, then the control connection closed: the association ends with it.
fn udp_client(ctx: &Ctx, _: Option<&str>) {
    let c = ctx.peer(0, "A");
    let fd = c.socket();
    c.connect(fd, 1080);
    ctx.settle();
    c.write(fd, &[5, 1, 0]);
    ctx.settle();
    c.read(fd);
    let u = c.udp_socket();
    c.bind(u, CLIENT_UDP);
    let [hi, lo] = CLIENT_UDP.to_be_bytes();
    c.note("UDP ASSOCIATE names where the client's datagrams will come from");
    c.write(fd, &[5, 3, 0, 1, 127, 0, 0, 1, hi, lo]);
    ctx.settle();
    let reply = c.read(fd);
    // The reply's BND: the relay's UDP socket, the port the kernel picked for it.
    let Some(bnd) = reply
        .get(8..10)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .filter(|_| reply.get(1) == Some(&0))
    else {
        c.close(u);
        c.close(fd);
        return;
    };
    let [hi, lo] = UDP_ECHO.to_be_bytes();
    for line in [&b"one\n"[..], &b"two\n"[..]] {
        let mut dgram = vec![0, 0, 0, 1, 127, 0, 0, 1, hi, lo];
        dgram.extend_from_slice(line);
        c.sendto(u, &dgram, bnd, &format!("header + {}", quoted(line, 24)));
        ctx.settle();
        c.recvfrom(u);
    }
    c.note("the control connection ends, and the association with it");
    c.close(fd);
    ctx.settle();
    c.close(u);
}

/// Lesson 17: A is served by the first process; SIGHUP (sent by the script) starts its
/// successor, which takes the listener over SCM_RIGHTS; B connects and is served by the
/// successor while A, still on the old process, finishes there.
fn restart_clients(ctx: &Ctx, _: Option<&str>) {
    let a = ctx.peer(0, "A");
    let fa = a.socket();
    a.connect(fa, 23333);
    ctx.settle();
    a.read(fa);
    a.write(fa, b"hi\n");
    ctx.settle();
    a.read(fa);
    a.note("SIGHUP to the lesson: it starts its successor and hands it the listener");
    ctx.signal(libc::SIGHUP);
    ctx.settle();
    ctx.settle();
    a.note("client B connects: the successor accepts it");
    let b = ctx.peer(0, "B");
    let fb = b.socket();
    b.connect(fb, 23333);
    ctx.settle();
    b.read(fb);
    b.write(fb, b"hey\n");
    ctx.settle();
    b.read(fb);
    a.note("A, still served by the old process, finishes there");
    a.write(fa, b"bye\nq\n");
    ctx.settle();
    let got = a.read(fa);
    if !got.is_empty() {
        a.read(fa);
    }
    a.close(fa);
    ctx.settle();
    b.write(fb, b"q\n");
    ctx.settle();
    b.read(fb);
    b.close(fb);
}
