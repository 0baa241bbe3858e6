//! From what was recorded (the lanes' calls, the captured packets, the script's notes) to
//! the diagram's rows, in time order, normalised: connections named A, B, ... in the order
//! of their SYNs, ephemeral ports named after their connection, sequence numbers relative,
//! times dropped (only the order stays, and the pauses the script makes on purpose), the
//! peers' TCP states derived from the packets by the TCP state machine (RFC 9293 §3.3.2).

use std::collections::HashMap;

use protocols::packet::{parse_frame, Transport};

use crate::capture::Frame;
use crate::party::{Call, Note};

/// How a call is drawn: in one row, or as the row where it starts (an activation bar
/// follows, while it blocks) and the row where it returns.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Span {
    Whole,
    Begin,
    End,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Row {
    Call {
        lane: usize,
        slot: usize,
        span: Span,
        conn: Option<char>,
        text: String,
    },
    Packet {
        conn: char,
        from: usize,
        to: usize,
        kind: String,
        label: String,
        detail: String,
    },
    /// (lane, connection, state) for each change the packet above caused.
    States(Vec<(usize, Option<char>, String)>),
    Note(String),
}

/// The whole picture: title, lanes (name, role), rows.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Diagram {
    pub title: String,
    pub subtitle: String,
    pub lanes: Vec<(String, String)>,
    pub rows: Vec<Row>,
}

/// The calls a lane shows; the others (bind, setsockopt, getsockname, fcntl, ...) are left
/// to `make trace-NN` and `make step-NN`.
pub const SHOWN: &[&str] = &[
    "socket",
    "connect",
    "listen",
    "accept",
    "accept4",
    "read",
    "write",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "recvmmsg",
    "sendmmsg",
    "splice",
    "shutdown",
    "close",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "io_uring_enter",
    "rt_sigtimedwait",
    "clone",
    "clone3",
    "fork",
    "wait4",
    "execve",
];

/// Calls that wait for something to happen.
const WAITING: &[&str] = &[
    "accept",
    "accept4",
    "read",
    "recvfrom",
    "recvmsg",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "io_uring_enter",
    "rt_sigtimedwait",
    "wait4",
];

/// Calls that are drawn only when they are about a socket.
const ON_SOCKETS: &[&str] = &[
    "read", "write", "close", "shutdown", "splice", "recvfrom", "sendto", "recvmsg", "sendmsg",
    "recvmmsg", "sendmmsg",
];

/// A date and time as `2026-12-07T15:03:55+00:00` (the hello lessons' greeting) → `<time>`.
pub fn no_times(s: &str) -> String {
    let b = s.as_bytes();
    let shape = b"0000-00-00T00:00:00+00:00";
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let fits = i + shape.len() <= b.len()
            && shape.iter().zip(&b[i..]).all(|(p, c)| match p {
                b'0' => c.is_ascii_digit(),
                b'+' => *c == b'+' || *c == b'-',
                _ => p == c,
            });
        if fits {
            out.push_str("<time>");
            i += shape.len();
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The stepper's decoded text, made short and the same from run to run: the kernel's view
/// after each fd (`4<TCP ...>`) dropped, addresses in memory written `&buf`, strings cut,
/// times replaced.
pub fn simplify(text: &str) -> String {
    let text = no_times(text);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    let mut str_len = 0;
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                let next = chars.next().unwrap_or(' ');
                if str_len < 20 {
                    out.push(c);
                    out.push(next);
                }
                str_len += 1;
                continue;
            }
            if c == '"' {
                in_str = false;
                out.push('"');
                if str_len > 20 {
                    out.push('…');
                }
                prev = c;
                continue;
            }
            if str_len < 20 {
                out.push(c);
            }
            str_len += 1;
            continue;
        }
        if c == '"' {
            in_str = true;
            str_len = 0;
            out.push(c);
            continue;
        }
        if c == '<' && prev.is_ascii_digit() {
            let mut depth = 1;
            for d in chars.by_ref() {
                match d {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
            continue;
        }
        if c == '0' && chars.peek() == Some(&'x') && !prev.is_ascii_alphanumeric() {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_hexdigit) {
                digits.push(d);
                chars.next();
            }
            // An address in memory (long) is noise; a flag value (short) is kept.
            if digits.len() >= 8 {
                out.push_str("&buf");
            } else {
                out.push_str("0x");
                out.push_str(&digits);
            }
            prev = 'f';
            continue;
        }
        out.push(c);
        prev = c;
    }
    let mut out = out.replace("\"…...", "\"…");
    // An errno's or a 0's explanation in parentheses is left to `make trace-NN`.
    if let Some(at) = out.find(" (") {
        let words = &out[at + 2..];
        if out.starts_with("-1 ") || !words.contains(['=', '{', '[']) {
            out.truncate(at);
        }
    }
    out
}

/// Cut to `max` characters, "…" marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut t: String = text.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// The first `<TCP a:p↔b:q` in the stepper's text: (local port, remote port); a listener's
/// `<TCP a:p LISTEN>` or `<TCP a:p>`: (p, 0).
pub fn ports_in(text: &str) -> Option<(u16, u16)> {
    let at = text.find("<TCP ").or_else(|| text.find("<UDP "))? + 5;
    let rest = &text[at..];
    let end = rest.find(['>', ' ']).unwrap_or(rest.len());
    let (pair, _) = rest.split_at(end);
    let port = |s: &str| s.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    match pair.split_once('↔') {
        Some((l, r)) => Some((port(l)?, port(r)?)),
        None => Some((port(pair)?, 0)),
    }
}

/// One line of `step --record`, as a call of lane `lane`.
pub fn traced_call(line: &str, lane: usize, threads: &mut Vec<String>) -> Option<Call> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 7 {
        return None;
    }
    let name = f[4];
    if !SHOWN.contains(&name) {
        return None;
    }
    // A Unix socket's message is shown where it carries fds (SCM_RIGHTS: lesson 17's
    // handover); its other traffic is the lesson's plumbing.
    let rights = matches!(name, "sendmsg" | "recvmsg") && line.contains("SCM_RIGHTS");
    let on_socket = rights || ["<TCP", "<UDP", "<socket"].iter().any(|k| f[5].contains(k));
    // The lesson's own plumbing (the stop pipe's socketpair side, the start-up's netlink
    // questions) is not its connection.
    if name == "socket"
        && (f[5].starts_with("socket(AF_UNIX") || f[5].starts_with("socket(AF_NETLINK"))
    {
        return None;
    }
    if ON_SOCKETS.contains(&name) && !on_socket {
        return None;
    }
    // The Rust runtime's check of fds 0, 1 and 2 at a program's start (a successor's, after
    // execve): not the lesson's.
    let start_check = simplify(f[5]);
    if name == "poll"
        && start_check.starts_with("poll([{fd=0, events=0")
        && start_check.contains("{fd=2, events=0")
    {
        return None;
    }
    let who = f[3].to_string();
    if !threads.contains(&who) {
        threads.push(who.clone());
    }
    if name == "execve" {
        // The program by its name (where it lies differs from machine to machine).
        let path = f[5].split('"').nth(1).unwrap_or("");
        let program = path.rsplit('/').next().unwrap_or(path);
        return Some(Call {
            lane,
            who,
            entered: f[0].parse().ok()?,
            exited: f[1].parse().ok()?,
            name: name.to_string(),
            text: format!("execve(\"{program}\", argv, envp)"),
            result: simplify(f[6]),
            ports: None,
            got: None,
            wrote: None,
        });
    }
    let mut result = simplify(f[6]);
    // Binary bytes (a captured frame) say nothing as text: the count is enough.
    if let Some((n, rest)) = result.split_once(" \"\\x") {
        if n.parse::<usize>().is_ok() && !rest.is_empty() {
            result = n.to_string();
        }
    }
    let count = result
        .split(' ')
        .next()
        .and_then(|n| n.parse::<usize>().ok());
    let got = count.filter(|_| matches!(name, "read" | "recvfrom" | "recvmsg"));
    let wrote = count.filter(|_| matches!(name, "write" | "sendto" | "sendmsg"));
    Some(Call {
        lane,
        who,
        entered: f[0].parse().ok()?,
        exited: f[1].parse().ok()?,
        name: name.to_string(),
        text: left(&simplify(f[5])).replace("socket(17, ", "socket(AF_PACKET, "),
        result,
        // accept's connection is the one it returns, not the listener it is called on.
        ports: if name.starts_with("accept") {
            ports_in(f[6]).or_else(|| ports_in(f[5]))
        } else {
            ports_in(f[5]).or_else(|| ports_in(f[6]))
        },
        got,
        wrote,
    })
}

/// A wait's timeout computed from a deadline (lesson 17's drain: 29999, 29243 ms, ...) is
/// written `<ms left>`: how much is left depends on the machine's speed. Set timeouts (-1,
/// 0, whole seconds) stay.
fn left(text: &str) -> String {
    let waits = ["poll(", "ppoll(", "epoll_wait(", "epoll_pwait("];
    if !waits.iter().any(|w| text.starts_with(w)) {
        return text.to_string();
    }
    let Some((head, last)) = text.trim_end_matches(')').rsplit_once(", ") else {
        return text.to_string();
    };
    match last.parse::<i64>() {
        Ok(ms) if ms > 1000 && ms % 1000 != 0 => format!("{head}, <ms left>)"),
        _ => text.to_string(),
    }
}

struct Seg {
    ns: u128,
    src: u16,
    dst: u16,
    syn: bool,
    ack_flag: bool,
    fin: bool,
    rst: bool,
    seq: u32,
    ack: u32,
    win: u16,
    len: usize,
    udp: bool,
}

fn segments(frames: &[Frame]) -> Vec<Seg> {
    let mut out = Vec::new();
    for f in frames {
        let Ok(frame) = parse_frame(&f.bytes) else {
            continue;
        };
        match &frame.transport {
            Some(Transport::Tcp(t)) => out.push(Seg {
                ns: f.ns,
                src: t.src_port,
                dst: t.dst_port,
                syn: t.flags.syn(),
                ack_flag: t.flags.ack(),
                fin: t.flags.fin(),
                rst: t.flags.rst(),
                seq: t.seq,
                ack: t.ack,
                win: t.window,
                len: t.payload_len,
                udp: false,
            }),
            Some(Transport::Udp(u)) => out.push(Seg {
                ns: f.ns,
                src: u.src_port,
                dst: u.dst_port,
                syn: false,
                ack_flag: false,
                fin: false,
                rst: false,
                seq: 0,
                ack: 0,
                win: 0,
                len: u.payload.len(),
                udp: true,
            }),
            _ => {}
        }
    }
    out
}

enum Item {
    Enter(usize),
    Exit(usize),
    Seg(usize),
    Note(usize),
    /// The script waited here until all was quiet: nothing after it caused what came before.
    Barrier,
}

/// One side of a connection, for the state machine.
#[derive(Default, Clone)]
struct Side {
    state: &'static str,
    isn: u32,
    /// Relative sequence number of our FIN, once sent.
    fin_at: Option<u32>,
}

/// Puts everything in one order and derives the rows.
pub fn build(
    calls: Vec<Call>,
    frames: &[Frame],
    notes: Vec<Note>,
    barriers: &[u128],
    busy: bool,
    fences: &[&str],
) -> Vec<Row> {
    // A busy loop's calls never wait: each is drawn at its return, in one row (a packet
    // that came while the stepper held it did not wake it).
    let mut calls = calls;
    if busy {
        for c in calls.iter_mut() {
            c.entered = c.exited;
        }
    }
    // Child processes and threads are named in the order they were made: their ids
    // change from run to run.
    let mut children: Vec<String> = Vec::new();
    let mut by_time: Vec<usize> = (0..calls.len()).collect();
    by_time.sort_by_key(|i| calls[*i].exited);
    for i in by_time {
        let c = &mut calls[i];
        if matches!(
            c.name.as_str(),
            "clone" | "clone3" | "fork" | "vfork" | "wait4"
        ) {
            let pid = c.result.split(' ').next().unwrap_or("").to_string();
            if pid.parse::<u32>().is_ok_and(|p| p > 0) {
                if !children.contains(&pid) {
                    children.push(pid.clone());
                }
                let n = children.iter().position(|p| *p == pid).unwrap_or(0) + 1;
                c.result = c.result.replacen(&pid, &format!("child {n}"), 1);
            }
        }
    }
    let mut first_seen: Vec<(usize, String)> = Vec::new();
    let mut order: Vec<usize> = (0..calls.len()).collect();
    order.sort_by_key(|i| calls[*i].entered);
    for i in order {
        let k = (calls[i].lane, calls[i].who.clone());
        if !first_seen.contains(&k) {
            first_seen.push(k);
        }
    }
    // A call made before its socket was connected (connect itself) is about the
    // connection the same thread's next calls on that fd name.
    let fd_of = |text: &str| -> Option<String> {
        let args = text.split_once('(')?.1;
        let fd: String = args.chars().take_while(char::is_ascii_digit).collect();
        (!fd.is_empty()).then_some(fd)
    };
    for i in 0..calls.len() {
        if calls[i].ports.is_some() {
            continue;
        }
        let Some(fd) = fd_of(&calls[i].text) else {
            continue;
        };
        let mut after: Vec<usize> = (0..calls.len())
            .filter(|j| {
                calls[*j].lane == calls[i].lane
                    && calls[*j].who == calls[i].who
                    && calls[*j].entered > calls[i].entered
                    && fd_of(&calls[*j].text).as_deref() == Some(fd.as_str())
            })
            .collect();
        after.sort_by_key(|j| calls[*j].entered);
        let later = after.first().copied().filter(|j| calls[*j].ports.is_some());
        if let Some(j) = later {
            calls[i].ports = calls[j].ports;
        }
    }
    let calls = calls;
    let segs = segments(frames);
    // Which lane owns which port: from the calls that name a connection.
    let mut lane_of: HashMap<u16, usize> = HashMap::new();
    for c in &calls {
        if let Some((local, _)) = c.ports {
            if local != 0 {
                lane_of.entry(local).or_insert(c.lane);
            }
        }
    }
    // ... and which lane which side of a connection: a listening port handed from one
    // process to another (lesson 17) serves connections on both lanes.
    let mut side_lane: HashMap<(u16, u16), usize> = HashMap::new();
    for c in &calls {
        if let Some((local, remote)) = c.ports {
            if local != 0 && remote != 0 {
                side_lane.entry((local, remote)).or_insert(c.lane);
            }
        }
    }
    let lane_at = |port: u16, peer: u16| {
        side_lane
            .get(&(port, peer))
            .copied()
            .unwrap_or(lane_of[&port])
    };
    // Connections named in the order of their first packet.
    let mut conn_of: HashMap<(u16, u16), char> = HashMap::new();
    let key = |a: u16, b: u16| (a.min(b), a.max(b));
    for s in &segs {
        if lane_of.contains_key(&s.src) && lane_of.contains_key(&s.dst) {
            let n = conn_of.len();
            conn_of
                .entry(key(s.src, s.dst))
                .or_insert((b'A' + n as u8) as char);
        }
    }
    let many = conn_of.len() > 1;
    // An ephemeral port is named after its connection; listening ports stay numbers.
    let mut port_name: HashMap<u16, char> = HashMap::new();
    for s in &segs {
        if s.syn && !s.ack_flag {
            if let Some(c) = conn_of.get(&key(s.src, s.dst)) {
                port_name.insert(s.src, *c);
            }
        }
    }
    // A UDP port the kernel picked (the relay's, per association) is named after the first
    // exchange of datagrams it took part in, as a TCP port after its connection.
    for s in segs.iter().filter(|s| s.udp) {
        if let Some(c) = conn_of.get(&key(s.src, s.dst)).copied() {
            for port in [s.src, s.dst] {
                if port >= EPHEMERAL && !port_name.contains_key(&port) {
                    port_name.insert(port, c);
                }
            }
        }
    }
    let rename = |text: &str| -> String {
        let mut t = no_times(text);
        for (port, c) in &port_name {
            t = t.replace(&format!(":{port}"), &format!(":{c}"));
        }
        t
    };
    let conn_for = |ports: Option<(u16, u16)>| -> Option<char> {
        let (l, r) = ports?;
        conn_of.get(&key(l, r)).copied()
    };

    let mut items: Vec<(u128, u8, Item)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        items.push((c.entered, 0, Item::Enter(i)));
        items.push((c.exited, 2, Item::Exit(i)));
    }
    for (i, s) in segs.iter().enumerate() {
        if lane_of.contains_key(&s.src) && lane_of.contains_key(&s.dst) {
            items.push((s.ns, 1, Item::Seg(i)));
        }
    }
    for (i, n) in notes.iter().enumerate() {
        items.push((n.ns, 0, Item::Note(i)));
    }
    // A call's exit is seen a little after it happened (the stepper's stop, a scheduler's
    // delay): its row goes right after the packet that ended it, when there is one. A call
    // that sends ends after its first segment (connect: the handshake's ACK; write: its
    // data; close and shutdown: their FIN or RST); a call that waits, after the segment it
    // waited for (accept: the handshake's ACK; read: data, FIN or RST).
    for (ns, order, item) in items.iter_mut() {
        let Item::Exit(i) = item else { continue };
        let c = &calls[*i];
        let Some((local, remote)) = c.ports else {
            continue;
        };
        if remote == 0 {
            continue;
        }
        let window = |s: &&Seg| s.ns >= c.entered && s.ns <= c.exited;
        let mine = |s: &&Seg| s.src == local && s.dst == remote;
        let theirs = |s: &&Seg| s.src == remote && s.dst == local;
        let anchor = match c.name.as_str() {
            "connect" => segs
                .iter()
                .filter(window)
                .find(|s| mine(s) && s.ack_flag && !s.syn && s.len == 0),
            "write" | "sendto" | "sendmsg" | "splice" => {
                segs.iter().filter(window).find(|s| mine(s) && s.len > 0)
            }
            "close" | "shutdown" => segs
                .iter()
                .filter(window)
                .find(|s| mine(s) && (s.fin || s.rst)),
            "accept" | "accept4" => segs
                .iter()
                .filter(window)
                .find(|s| theirs(s) && s.ack_flag && !s.syn),
            "read" | "recvfrom" | "recvmsg" => segs
                .iter()
                .filter(window)
                .find(|s| theirs(s) && (s.len > 0 || s.fin || s.rst)),
            _ => None,
        };
        if let Some(a) = anchor {
            *ns = a.ns;
            *order = 2;
        }
    }
    // A waiting call (read, accept, poll, ...) is drawn from the end of its thread's call
    // before: when the thread got round to entering it is the scheduler's business, and a
    // wait drawn from there says the same.
    let exit_key: HashMap<usize, (u128, u8)> = items
        .iter()
        .filter_map(|(ns, order, item)| match item {
            Item::Exit(i) => Some((*i, (*ns, *order))),
            _ => None,
        })
        .collect();
    for (ns, order, item) in items.iter_mut() {
        let Item::Enter(i) = item else { continue };
        let c = &calls[*i];
        if busy || !WAITING.contains(&c.name.as_str()) {
            continue;
        }
        let before = (0..calls.len())
            .filter(|j| {
                calls[*j].lane == c.lane
                    && calls[*j].who == c.who
                    && calls[*j].exited <= c.entered
                    && *j != *i
            })
            .max_by_key(|j| calls[*j].exited);
        // ... but never above a point where the script waited or spoke: those are order.
        let fence = barriers
            .iter()
            .chain(notes.iter().map(|n| &n.ns))
            .filter(|t| **t < c.entered)
            .max()
            .map(|t| (*t, 4u8));
        if let Some(key) = before.and_then(|j| exit_key.get(&j)) {
            (*ns, *order) = match fence {
                Some(f) if f > *key => f,
                _ => *key,
            };
        }
    }
    for ns in barriers {
        items.push((*ns, 3, Item::Barrier));
    }
    items.sort_by_key(|(ns, order, _)| (*ns, *order));
    // Calls of different lanes with no packet between them are not ordered by anything but
    // the scheduler (which of two woken processes runs first): within such a run, the
    // lanes go left to right, each lane's own calls in their order.
    // ... except where a call's return says it heard from another process or thread of its
    // lane (the session names them: lesson 17's handover): those stay where they happened.
    let fence = |i: usize| {
        let said = format!("{} = {}", calls[i].name, calls[i].result);
        fences.iter().any(|f| said.contains(f))
    };
    let lane_key = |item: &Item| match item {
        Item::Exit(i) if fence(*i) => None,
        Item::Enter(i) | Item::Exit(i) => {
            let c = &calls[*i];
            let who = first_seen
                .iter()
                .position(|k| k.0 == c.lane && k.1 == c.who)
                .unwrap_or(0);
            Some((c.lane, who))
        }
        _ => None,
    };
    let mut start = 0;
    while start < items.len() {
        if lane_key(&items[start].2).is_none() {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < items.len() && lane_key(&items[end].2).is_some() {
            end += 1;
        }
        items[start..end].sort_by_key(|(_, _, item)| lane_key(item));
        start = end;
    }

    // Threads and processes of a lane in order of appearance: the lane's slots.
    let mut slots: HashMap<(usize, String), usize> = HashMap::new();
    let mut slot_of = |c: &Call| -> usize {
        let n = slots.keys().filter(|(l, _)| *l == c.lane).count();
        *slots.entry((c.lane, c.who.clone())).or_insert(n)
    };

    let mut sides: HashMap<(u16, u16), Side> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    // Data packets toward a port: (row, end of its bytes counted from the first).
    let mut sent_by: HashMap<(u16, u16), usize> = HashMap::new();
    let mut delivered: HashMap<(u16, u16), Vec<(usize, usize)>> = HashMap::new();
    let mut skip_exit: Vec<usize> = Vec::new();
    let tag = |c: Option<char>| if many { c } else { None };
    for (pos, (_, _, item)) in items.iter().enumerate() {
        match item {
            Item::Enter(i) => {
                let c = &calls[*i];
                let slot = slot_of(c);
                let conn = tag(conn_for(c.ports));
                let next = items[pos + 1..]
                    .iter()
                    .find(|(_, _, it)| !matches!(it, Item::Barrier));
                let whole = matches!(next, Some((_, _, Item::Exit(j))) if j == i);
                let text = cut(&rename(&c.text), 56);
                if whole {
                    skip_exit.push(*i);
                    rows.push(Row::Call {
                        lane: c.lane,
                        slot,
                        span: Span::Whole,
                        conn,
                        text: format!("{text} = {}", cut(&rename(&c.result), 40)),
                    });
                } else {
                    rows.push(Row::Call {
                        lane: c.lane,
                        slot,
                        span: Span::Begin,
                        conn,
                        text,
                    });
                }
                // shutdown(SHUT_WR) moves the state at once, even while its FIN waits behind
                // unsent data.
                if c.name == "shutdown" && !c.text.contains("SHUT_RD,") {
                    if let Some(side) = c.ports {
                        let st = sides.entry(side).or_default();
                        let next = match st.state {
                            "ESTABLISHED" => "FIN_WAIT_1",
                            "CLOSE_WAIT" => "LAST_ACK",
                            _ => "",
                        };
                        if !next.is_empty() {
                            st.state = next;
                            let conn = tag(conn_for(c.ports));
                            rows.push(Row::States(vec![(c.lane, conn, next.to_string())]));
                        }
                    }
                }
                if c.name == "listen" && c.result == "0" {
                    rows.push(Row::States(vec![(c.lane, None, "LISTEN".into())]));
                }
            }
            Item::Exit(i) => {
                if skip_exit.contains(i) {
                    continue;
                }
                let c = &calls[*i];
                let slot = slot_of(c);
                rows.push(Row::Call {
                    lane: c.lane,
                    slot,
                    span: Span::End,
                    conn: tag(conn_for(c.ports)),
                    text: format!("{} = {}", c.name, cut(&rename(&c.result), 40)),
                });
            }
            Item::Note(i) => rows.push(Row::Note(notes[*i].text.clone())),
            Item::Barrier => rows.push(Row::Note(IDLE.into())),
            Item::Seg(i) => {
                let s = &segs[*i];
                let conn = conn_of[&key(s.src, s.dst)];
                let (from, to) = (lane_at(s.src, s.dst), lane_at(s.dst, s.src));
                if s.udp {
                    // No connection, so no state: a datagram is its length and its ports.
                    let name = |p: u16| port_name.get(&p).map_or(p.to_string(), char::to_string);
                    rows.push(Row::Packet {
                        conn,
                        from,
                        to,
                        kind: "udp".into(),
                        label: format!("UDP {} B", s.len),
                        detail: format!("port {} → {}", name(s.src), name(s.dst)),
                    });
                    continue;
                }
                // A side is (its port, its peer's port): a listening port serves many.
                let (me, peer) = ((s.src, s.dst), (s.dst, s.src));
                if s.syn {
                    sides.entry(me).or_default().isn = s.seq;
                }
                let isn_src = sides.get(&me).map_or(s.seq, |x| x.isn);
                let isn_dst = sides.get(&peer).map_or(s.ack, |x| x.isn);
                let rseq = s.seq.wrapping_sub(isn_src);
                let rack = s.ack.wrapping_sub(isn_dst);
                let (kind, mut label, detail) = if s.rst {
                    ("rst", "RST".to_string(), format!("seq {rseq}"))
                } else if s.syn && s.ack_flag {
                    ("syn", "SYN-ACK".to_string(), format!("seq 0 ack {rack}"))
                } else if s.syn {
                    ("syn", "SYN".to_string(), "seq 0".to_string())
                } else if s.fin {
                    let l = if s.len > 0 {
                        format!("FIN + data {} B", s.len)
                    } else {
                        "FIN".to_string()
                    };
                    ("fin", l, format!("seq {rseq} ack {rack}"))
                } else if s.len > 0 {
                    (
                        "data",
                        format!("data {} B", s.len),
                        format!("seq {rseq}:{} ack {rack}", rseq as usize + s.len),
                    )
                } else {
                    ("ack", "ACK".to_string(), format!("ack {rack}"))
                };
                if s.win == 0 && !s.rst {
                    label.push_str("  win 0");
                }
                if s.len > 0 {
                    *sent_by.entry(me).or_default() += s.len;
                    let list = delivered.entry(peer).or_default();
                    let before = list.last().map_or(0, |(_, end)| *end);
                    list.push((rows.len(), before + s.len));
                }
                rows.push(Row::Packet {
                    conn,
                    from,
                    to,
                    kind: kind.into(),
                    label,
                    detail,
                });
                // The state machine, both ends.
                let mut changes = Vec::new();
                let before_src = sides.get(&me).map_or("", |x| x.state);
                let before_dst = sides.get(&peer).map_or("", |x| x.state);
                let dst_fin = sides.get(&peer).and_then(|x| x.fin_at);
                let acks_dst_fin = s.ack_flag && dst_fin.is_some_and(|f| rack > f);
                let mut src_state = before_src;
                let mut dst_state = before_dst;
                if s.rst {
                    src_state = "CLOSED";
                    dst_state = "CLOSED";
                } else {
                    if s.syn && !s.ack_flag {
                        src_state = "SYN_SENT";
                        dst_state = "SYN_RCVD";
                    } else if s.syn || (s.ack_flag && dst_state == "SYN_RCVD") {
                        // SYN-ACK: the connecting side is established; the handshake's
                        // ACK: the listening side is.
                        dst_state = "ESTABLISHED";
                    }
                    if acks_dst_fin {
                        dst_state = match dst_state {
                            "FIN_WAIT_1" => "FIN_WAIT_2",
                            "CLOSING" => "TIME_WAIT",
                            "LAST_ACK" => "CLOSED",
                            other => other,
                        };
                    }
                    if s.fin {
                        src_state = match src_state {
                            "CLOSE_WAIT" => "LAST_ACK",
                            _ => "FIN_WAIT_1",
                        };
                        let side = sides.entry(me).or_default();
                        side.fin_at = Some(rseq + s.len as u32);
                        dst_state = match dst_state {
                            "FIN_WAIT_1" => "CLOSING",
                            "FIN_WAIT_2" => "TIME_WAIT",
                            "ESTABLISHED" | "SYN_RCVD" => "CLOSE_WAIT",
                            other => other,
                        };
                    }
                }
                let ctag = tag(Some(conn));
                if src_state != before_src {
                    sides.entry(me).or_default().state = src_state;
                    changes.push((from, ctag, src_state.to_string()));
                }
                if dst_state != before_dst {
                    sides.entry(peer).or_default().state = dst_state;
                    changes.push((to, ctag, dst_state.to_string()));
                }
                if !changes.is_empty() {
                    rows.push(Row::States(changes));
                }
            }
        }
    }
    // What a reset destroyed: bytes that reached a socket whose connection was then reset
    // but that its program never read; bytes a program wrote that never left its socket.
    let was_reset = |(a, b): (u16, u16)| {
        segs.iter()
            .any(|s| s.rst && ((s.src, s.dst) == (a, b) || (s.src, s.dst) == (b, a)))
    };
    let on = |c: &Call, side: (u16, u16)| c.ports == Some(side);
    for (side, list) in &delivered {
        let reads = calls.iter().any(|c| c.got.is_some() && on(c, *side));
        if !was_reset(*side) || !reads {
            continue;
        }
        let read: usize = calls
            .iter()
            .filter(|c| on(c, *side))
            .filter_map(|c| c.got)
            .sum();
        for (row, end) in list {
            if *end > read {
                if let Row::Packet { kind, label, .. } = &mut rows[*row] {
                    *kind = "lost".into();
                    label.push_str(", never read: lost");
                }
            }
        }
    }
    let mut extra: Vec<(usize, Row)> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Row::Packet {
            kind,
            conn,
            from,
            to,
            ..
        } = row
        else {
            continue;
        };
        if kind != "rst" {
            continue;
        }
        // The RST's row: every side of that connection that wrote more than it sent.
        for (side, sent) in &sent_by {
            if conn_of.get(&key(side.0, side.1)) != Some(conn) {
                continue;
            }
            let wrote: usize = calls
                .iter()
                .filter(|c| on(c, *side))
                .filter_map(|c| c.wrote)
                .sum();
            if wrote > *sent
                && !extra
                    .iter()
                    .any(|(_, r)| matches!(r, Row::Packet { conn: c, .. } if c == conn))
            {
                let (f, t) = if lane_at(side.0, side.1) == *from {
                    (*from, *to)
                } else {
                    (*to, *from)
                };
                extra.push((
                    i + 1,
                    Row::Packet {
                        conn: *conn,
                        from: f,
                        to: t,
                        kind: "lost".into(),
                        label: format!(
                            "{} B written, never sent: the reset destroyed them",
                            wrote - sent
                        ),
                        detail: "still in the send queue".into(),
                    },
                ));
            }
        }
    }
    for (at, row) in extra.into_iter().rev() {
        rows.insert(at, row);
    }
    collapse(rows, busy)
}

/// Where the kernel's ephemeral ports start (net.ipv4.ip_local_port_range's default).
const EPHEMERAL: u16 = 32768;

const AGAIN: &str = "  (again and again)";
/// Where the script waited for quiet (dropped before drawing): a busy loop's stretch is
/// drawn where it spun through such a wait, which every run does.
const IDLE: &str = "\u{0}idle";

fn busy_text(row: &Row) -> Option<(usize, usize, String)> {
    match row {
        Row::Call {
            lane,
            slot,
            span: Span::Whole,
            text,
            ..
        } if text.ends_with("= -1 EAGAIN") || text.ends_with("= 0 (Timeout)") => {
            Some((*lane, *slot, text.clone()))
        }
        _ => None,
    }
}

/// Calls that found nothing to do (EAGAIN, a timeout), one after another, are drawn once
/// per stretch, marked "again and again": how many times they ran depends on the machine's
/// speed. A busy loop's stretches are one row naming every call it tries (which ones a
/// stretch caught depends on the speed too).
fn collapse(rows: Vec<Row>, busy: bool) -> Vec<Row> {
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(busy_text)
        .map(|(_, _, t)| t.split('(').next().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    let mut out: Vec<Row> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let Some((lane, slot, _)) = busy_text(&rows[i]) else {
            if !matches!(&rows[i], Row::Note(n) if n == IDLE) {
                out.push(rows[i].clone());
            }
            i += 1;
            continue;
        };
        let mut texts: Vec<String> = Vec::new();
        let mut count = 0;
        let mut spun_idle = false;
        loop {
            if matches!(rows.get(i), Some(Row::Note(n)) if n == IDLE) {
                spun_idle = true;
                i += 1;
                continue;
            }
            let Some((l, sl, t)) = rows.get(i).and_then(busy_text) else {
                break;
            };
            if l != lane || sl != slot {
                break;
            }
            if !texts.contains(&t) {
                texts.push(t);
            }
            count += 1;
            i += 1;
        }
        texts.sort();
        if busy && !spun_idle {
            continue;
        }
        if busy {
            texts = vec![format!("busy loop: {} = -1 EAGAIN", names.join(", "))];
        } else if count == 1 {
            out.push(Row::Call {
                lane,
                slot,
                span: Span::Whole,
                conn: None,
                text: texts.remove(0),
            });
            continue;
        }
        for t in texts {
            out.push(Row::Call {
                lane,
                slot,
                span: Span::Whole,
                conn: None,
                text: format!("{t}{AGAIN}"),
            });
        }
    }
    out
}

/// The rows as text, one per line, tab-separated: what is committed beside the SVG, and
/// what `diagram render` draws from.
pub fn to_text(d: &Diagram) -> String {
    let mut s = String::new();
    s.push_str(&format!("title\t{}\n", d.title));
    s.push_str(&format!("subtitle\t{}\n", d.subtitle));
    for (name, role) in &d.lanes {
        s.push_str(&format!("lane\t{name}\t{role}\n"));
    }
    let c = |c: &Option<char>| c.map_or("-".to_string(), |c| c.to_string());
    for r in &d.rows {
        let line = match r {
            Row::Call {
                lane,
                slot,
                span,
                conn,
                text,
            } => {
                let span = match span {
                    Span::Whole => "call",
                    Span::Begin => "begin",
                    Span::End => "end",
                };
                format!("{span}\t{lane}\t{slot}\t{}\t{text}", c(conn))
            }
            Row::Packet {
                conn,
                from,
                to,
                kind,
                label,
                detail,
            } => format!("packet\t{conn}\t{from}\t{to}\t{kind}\t{label}\t{detail}"),
            Row::States(list) => {
                let parts: Vec<String> = list
                    .iter()
                    .map(|(l, conn, st)| format!("{l}:{}:{st}", c(conn)))
                    .collect();
                format!("state\t{}", parts.join(";"))
            }
            Row::Note(t) => format!("note\t{t}"),
        };
        s.push_str(&line.replace('\n', " "));
        s.push('\n');
    }
    s
}

/// Reads what [`to_text`] wrote.
pub fn from_text(text: &str) -> Result<Diagram, String> {
    let mut d = Diagram::default();
    let conn = |s: &str| s.chars().next().filter(|c| *c != '-');
    let num = |s: &str, line: usize| {
        s.parse::<usize>()
            .map_err(|_| format!("line {line}: not a number: {s}"))
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let f: Vec<&str> = line.split('\t').collect();
        let need = |k: usize| {
            if f.len() < k {
                Err(format!("line {n}: {k} fields expected: {line}"))
            } else {
                Ok(())
            }
        };
        match f[0] {
            "title" => {
                need(2)?;
                d.title = f[1].to_string();
            }
            "subtitle" => {
                need(2)?;
                d.subtitle = f[1].to_string();
            }
            "lane" => {
                need(3)?;
                d.lanes.push((f[1].to_string(), f[2].to_string()));
            }
            "call" | "begin" | "end" => {
                need(5)?;
                d.rows.push(Row::Call {
                    lane: num(f[1], n)?,
                    slot: num(f[2], n)?,
                    span: match f[0] {
                        "call" => Span::Whole,
                        "begin" => Span::Begin,
                        _ => Span::End,
                    },
                    conn: conn(f[3]),
                    text: f[4..].join("\t"),
                });
            }
            "packet" => {
                need(7)?;
                d.rows.push(Row::Packet {
                    conn: conn(f[1]).unwrap_or('A'),
                    from: num(f[2], n)?,
                    to: num(f[3], n)?,
                    kind: f[4].to_string(),
                    label: f[5].to_string(),
                    detail: f[6].to_string(),
                });
            }
            "state" => {
                need(2)?;
                let mut list = Vec::new();
                for part in f[1].split(';') {
                    let p: Vec<&str> = part.splitn(3, ':').collect();
                    if p.len() != 3 {
                        return Err(format!("line {n}: a state is LANE:CONN:STATE: {part}"));
                    }
                    list.push((num(p[0], n)?, conn(p[1]), p[2].to_string()));
                }
                d.rows.push(Row::States(list));
            }
            "note" => {
                need(2)?;
                d.rows.push(Row::Note(f[1].to_string()));
            }
            other => return Err(format!("line {n}: unknown row kind {other}")),
        }
    }
    if d.lanes.len() < 2 {
        return Err("a diagram has at least two lanes".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steppers_text_is_made_short_and_stable() {
        assert_eq!(
            simplify("write(4<TCP 127.0.0.1:23333↔127.0.0.1:34644 ESTABLISHED>, \"Hello there! 2026-12-06T12:33:06+00:00\\n\", 39)"),
            "write(4, \"Hello there! <time>\\n\", 39)"
        );
        assert_eq!(
            simplify("getsockname(3<TCP 127.0.0.1:23333 LISTEN>, 0x7fff20aecb20, [128])"),
            "getsockname(3, &buf, [128])"
        );
        assert_eq!(
            simplify("write(5, \"a long line of more than twenty characters\", 42)"),
            "write(5, \"a long line of more \"…, 42)"
        );
        assert_eq!(
            simplify("-1 EAGAIN (Resource temporarily unavailable)"),
            "-1 EAGAIN"
        );
        assert_eq!(
            ports_in("accept(3<TCP 127.0.0.1:23333 LISTEN>, NULL, NULL)"),
            Some((23333, 0))
        );
        assert_eq!(
            ports_in("4<TCP 127.0.0.1:23333↔127.0.0.1:34644 ESTABLISHED>"),
            Some((23333, 34644))
        );
    }

    #[test]
    fn rows_survive_the_text_form() {
        let d = Diagram {
            title: "t".into(),
            subtitle: "s".into(),
            lanes: vec![
                ("client".into(), "script".into()),
                ("lesson".into(), "traced".into()),
            ],
            rows: vec![
                Row::Call {
                    lane: 0,
                    slot: 0,
                    span: Span::Begin,
                    conn: Some('A'),
                    text: "connect(3, 127.0.0.1:23333)".into(),
                },
                Row::Packet {
                    conn: 'A',
                    from: 0,
                    to: 1,
                    kind: "syn".into(),
                    label: "SYN".into(),
                    detail: "seq 0".into(),
                },
                Row::States(vec![
                    (0, Some('A'), "SYN_SENT".into()),
                    (1, None, "SYN_RCVD".into()),
                ]),
                Row::Note("a note".into()),
            ],
        };
        assert_eq!(from_text(&to_text(&d)).unwrap(), d);
    }
}
