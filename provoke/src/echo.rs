//! The kinds against an echo lesson (03–11 and 15; the first line of 01–02 counts as an answer in
//! `flood`): each returns what it saw in one line.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::peer::{describe, patience, raise_nofile, reversed, show, Got, Peer};
use crate::procs;
use crate::{Outcome, Provoked};

fn open(addr: SocketAddr) -> Result<Peer, String> {
    let mut p = Peer::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    p.welcome()?;
    Ok(p)
}

/// Compares replies with the lines they answer: "got 3 replies, all correct" or what was
/// wrong first.
fn judge(lines: &[&str], got: &[Vec<u8>], end: &Got) -> (bool, String) {
    let want: Vec<Vec<u8>> = lines.iter().map(|l| reversed(l.as_bytes())).collect();
    let right = got.iter().zip(&want).filter(|(g, w)| g == w).count();
    if got == want.as_slice() {
        return (true, format!("got {} replies, all correct", got.len()));
    }
    let first = match got.iter().zip(&want).position(|(g, w)| g != w) {
        Some(i) => format!(
            "; first wrong: {:?} where {:?} was due",
            show(&got[i]),
            show(&want[i])
        ),
        None if got.len() < want.len() => format!(", then {}", describe(end)),
        None => format!("; extra: {:?}", show(&got[want.len()])),
    };
    (
        false,
        format!(
            "got {} replies for {} lines, {right} correct{first}",
            got.len(),
            want.len()
        ),
    )
}

/// Lines sent one byte per write, a short pause between bytes so that each is a segment.
pub fn split(addr: SocketAddr) -> Provoked {
    let lines = ["hello world", "split one byte at a time"];
    let mut p = open(addr)?;
    let bytes: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    for b in &bytes {
        p.send(&[*b]).map_err(|e| format!("write: {e}"))?;
        // The pause is the provocation (one byte per read at the server), not a wait.
        thread::sleep(Duration::from_millis(3));
    }
    let (got, end) = p.lines(lines.len(), Instant::now() + patience());
    let (ok, said) = judge(&lines, &got, &end);
    Ok(Outcome::new(
        ok,
        format!(
            "sent {} lines in {} one-byte writes; {said}",
            lines.len(),
            bytes.len()
        ),
    ))
}

/// `n` lines in one write.
pub fn coalesced(addr: SocketAddr, n: usize) -> Provoked {
    let owned: Vec<String> = (1..=n).map(|i| format!("line number {i}")).collect();
    let lines: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut p = open(addr)?;
    let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
    p.send(bytes.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let (got, end) = p.lines(n, Instant::now() + patience());
    let (ok, said) = judge(&lines, &got, &end);
    Ok(Outcome::new(
        ok,
        format!("sent {n} lines in 1 write; {said}"),
    ))
}

/// 1,000 lines of 100 bytes (more replies than fit in our receive buffer while we write),
/// `q`, 1 MB more, a half-close, and only then reading: everything up to the close.
pub fn quit_then_junk(addr: SocketAddr, tries: usize) -> Provoked {
    let (mut head, mut want) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let line = format!("{i:0>99}");
        head.extend(format!("{line}\n").bytes());
        want.extend(line.bytes().rev().chain([b'\n']));
    }
    head.extend_from_slice(b"q\n");
    head.resize(head.len() + 1_000_000, b'x');
    let mut lost = Vec::new();
    for _ in 0..tries {
        let mut p = open(addr)?;
        let mut w = p.stream.try_clone().map_err(|e| format!("dup: {e}"))?;
        let bytes = head.clone();
        // Writes may fail once the server has closed: that is allowed, it stopped at q.
        let writer = thread::spawn(move || {
            let _ = w.write_all(&bytes);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        let _ = writer.join();
        let (got, end) = p.lines(usize::MAX, Instant::now() + 4 * patience());
        let got: Vec<u8> = got
            .into_iter()
            .flat_map(|l| l.into_iter().chain([b'\n']))
            .collect();
        if got != want || end != Got::Eof {
            lost.push((got.iter().filter(|&&b| b == b'\n').count(), end));
        }
    }
    let did = format!("{tries} tries of 1,000 lines + q + 1 MB more in one write");
    Ok(match lost.first() {
        None => Outcome::new(
            true,
            format!("{did}: all 1,000 replies, then EOF, every time"),
        ),
        Some((n, end)) => Outcome::new(
            false,
            format!(
                "{did}: replies lost in {} of {tries} tries (e.g. {n} of 1,000, then {})",
                lost.len(),
                describe(end)
            ),
        ),
    })
}

/// `n` clients at once; each sends a line; all send q at once; each must read its reply
/// and then EOF. Then the server's zombie children and threads, if /proc shows the server.
pub fn many(addr: SocketAddr, n: usize, max_threads: Option<usize>) -> Provoked {
    raise_nofile();
    let pid = procs::server_pid(addr);
    let mut peers = Vec::new();
    for _ in 0..n {
        peers.push(Peer::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?);
    }
    // One deadline per phase for all: a serial server does not cost n × patience().
    let by = Instant::now() + patience();
    // The first line: the welcome, or a polite "error: server full" (then EOF).
    let first: Vec<Got> = peers.iter_mut().map(|p| p.line_by(by)).collect();
    let is_full = |g: &Got| matches!(g, Got::Line(l) if l.starts_with(b"error: server full"));
    let welcomed: Vec<bool> = first
        .iter()
        .map(|g| matches!(g, Got::Line(l) if l == b"Welcome buddy!"))
        .collect();
    let full = first.iter().filter(|g| is_full(g)).count();
    for (i, p) in peers.iter_mut().enumerate() {
        if !is_full(&first[i]) {
            let _ = p.send(format!("client {i}\n").as_bytes());
        }
    }
    let by = Instant::now() + patience();
    let mut answered = vec![false; n];
    for (i, p) in peers.iter_mut().enumerate() {
        if !is_full(&first[i]) {
            answered[i] = p.line_by(by) == Got::Line(reversed(format!("client {i}").as_bytes()));
        }
    }
    let threads = pid.map(procs::threads).unwrap_or(0);
    for p in peers.iter_mut() {
        let _ = p.send(b"q\n");
    }
    let by = Instant::now() + patience();
    let eof = peers
        .iter_mut()
        .zip(&answered)
        .map(|(p, &a)| a && matches!(p.line_by(by), Got::Eof))
        .filter(|&e| e)
        .count();
    drop(peers);
    let (welcomed, answered) = (
        welcomed.iter().filter(|&&w| w).count(),
        answered.iter().filter(|&&a| a).count(),
    );
    let mut said = format!("{n} clients at once: {welcomed} welcomed, {answered} answered");
    if full > 0 {
        said += &format!(", {full} told the server is full");
    }
    said += &format!(", {eof} saw EOF after q");
    let mut ok = answered + full == n && eof == answered;
    if let Some(pid) = pid {
        if threads > 1 {
            said += &format!("; the server ran {threads} threads");
        }
        if let Some(max) = max_threads.filter(|&m| threads > m) {
            said += &format!(" (more than {max}: a thread per client, no limit)");
            ok = false;
        }
        // Children exit as their clients leave: give the reaper a moment, then count.
        let by = Instant::now() + Duration::from_secs(2);
        let mut z = procs::zombies(pid);
        while z > 0 && Instant::now() < by {
            thread::sleep(Duration::from_millis(50));
            z = procs::zombies(pid);
        }
        said += &format!("; the server (pid {pid}) has {z} zombie children");
        ok &= z == 0;
    }
    Ok(Outcome::new(ok, said))
}

fn welcome_by(p: &mut Peer, by: Instant) -> bool {
    matches!(p.line_by(by), Got::Line(l) if l == b"Welcome buddy!")
}

/// `n` clients send half a line and dawdle; a fresh client must be served meanwhile; then
/// the slow ones finish their lines and must be answered.
pub fn slowloris(addr: SocketAddr, n: usize) -> Provoked {
    raise_nofile();
    let mut slow = Vec::new();
    for _ in 0..n {
        let mut p = Peer::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = p.send(b"slow");
        slow.push(p);
    }
    // Dawdling is the provocation.
    thread::sleep(Duration::from_millis(300));
    let fresh = match Peer::connect(addr) {
        Ok(mut p) => p.welcome().is_ok() && p.round_trip("fresh"),
        Err(_) => false,
    };
    let by = Instant::now() + patience();
    let welcomed = slow
        .iter_mut()
        .map(|p| welcome_by(p, by))
        .filter(|&w| w)
        .count();
    for p in slow.iter_mut() {
        let _ = p.send(b"loris\n");
    }
    let by = Instant::now() + patience();
    let finished = slow
        .iter_mut()
        .map(|p| p.line_by(by) == Got::Line(b"sirolwols".to_vec()))
        .filter(|&f| f)
        .count();
    let said = format!(
        "{n} clients sent half a line and dawdled; a fresh client was {}; \
         {finished} of {n} slow clients got their line answered ({welcomed} welcomed)",
        if fresh { "served" } else { "NOT served" }
    );
    Ok(Outcome::new(fresh && finished == n, said))
}

/// Lines, then shutdown(SHUT_WR): every reply, then EOF.
pub fn half_close(addr: SocketAddr) -> Provoked {
    let lines = ["one", "two", "three"];
    let mut p = open(addr)?;
    let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
    p.send(bytes.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    p.half_close().map_err(|e| format!("shutdown: {e}"))?;
    let (got, end) = p.lines(usize::MAX, Instant::now() + patience());
    let (ok, said) = judge(&lines, &got, &end);
    let ok = ok && end == Got::Eof;
    Ok(Outcome::new(
        ok,
        format!(
            "sent {} lines, then shutdown(SHUT_WR); {said}, then {}",
            lines.len(),
            describe(&end)
        ),
    ))
}

/// `n` connections reset mid-line; the server must serve a fresh client and (when /proc
/// shows it) be back to its fd count.
pub fn rst(addr: SocketAddr, n: usize) -> Provoked {
    let pid = procs::server_pid(addr);
    let before = pid.map(procs::fds);
    for _ in 0..n {
        let mut p = open(addr)?;
        let _ = p.send(b"half a li");
        p.reset();
    }
    let mut fresh = Peer::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    let served = fresh.welcome().is_ok() && fresh.round_trip("after the resets");
    drop(fresh);
    let mut said = format!(
        "reset {n} connections mid-line (SO_LINGER 0); a fresh client was {}",
        if served { "served" } else { "NOT served" }
    );
    let mut ok = served;
    if let (Some(pid), Some(before)) = (pid, before) {
        let by = Instant::now() + Duration::from_secs(2);
        let mut now = procs::fds(pid);
        while now > before && Instant::now() < by {
            thread::sleep(Duration::from_millis(50));
            now = procs::fds(pid);
        }
        said += &format!("; server fds {before} before, {now} after");
        ok &= now <= before;
    }
    Ok(Outcome::new(ok, said))
}

/// Connections, each waiting for a first line, until `n` or until one gets no answer;
/// then all leave, and a fresh client must be answered again.
pub fn flood(addr: SocketAddr, n: usize) -> Provoked {
    let limit = raise_nofile() as usize;
    let n = n.min(limit.saturating_sub(16));
    let pid = procs::server_pid(addr);
    let fds_before = pid.map(procs::fds);
    let (mut answered, mut refused, mut silent) = (0, 0, 0);
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(mut p) = Peer::connect(addr) else {
            silent += 1;
            break;
        };
        match p.line_by(Instant::now() + patience() / 3) {
            Got::Line(l) if l.starts_with(b"error:") => refused += 1,
            Got::Line(_) => answered += 1,
            _ => {
                silent += 1;
                break;
            }
        }
        held.push(p);
    }
    let fds_full = pid.map(procs::fds);
    let opened = held.len() + silent;
    drop(held);
    let alive = pid.is_none_or(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Once they have left: is a fresh client answered (within a few tries)?
    let by = Instant::now() + 2 * patience();
    let mut fresh = false;
    while !fresh && Instant::now() < by {
        fresh = Peer::connect(addr).is_ok_and(|mut p| {
            matches!(p.line_by(Instant::now() + patience() / 3), Got::Line(l) if !l.starts_with(b"error:"))
        });
    }
    // And has the server closed what they left (a leaked fd per client stays)?
    let mut leaked = None;
    if let (Some(pid), Some(before), true) = (pid, fds_before, alive) {
        let by = Instant::now() + 2 * patience();
        let mut now = procs::fds(pid);
        while now > before + 2 && Instant::now() < by {
            thread::sleep(Duration::from_millis(50));
            now = procs::fds(pid);
        }
        leaked = (now > before + 2).then_some((before, now));
    }
    let mut said = format!("opened {opened} connections: {answered} answered");
    if refused > 0 {
        said += &format!(", {refused} refused politely");
    }
    if silent > 0 {
        said += ", then one got no answer";
    }
    if let Some(f) = fds_full {
        said += &format!(" (server fds at the peak: {f})");
    }
    said += &format!(
        "; after they left, a fresh client was {}",
        if fresh {
            "answered"
        } else if !alive {
            "refused: the server is dead"
        } else {
            "NOT answered"
        }
    );
    if let Some((before, now)) = leaked {
        said +=
            &format!("; but the server holds {now} fds, {before} before: one leaked per client");
    }
    Ok(Outcome::new(fresh && leaked.is_none(), said))
}

/// Writes lines and never reads, up to `mib` MiB, until the writes stall; meanwhile the
/// server must serve a fresh client and not take in everything (it should stop reading).
pub fn slow_reader(addr: SocketAddr, mib: usize) -> Provoked {
    let pid = procs::server_pid(addr);
    let rss_before = pid.map(procs::rss_kib);
    let mut p = open(addr)?;
    let _ = p.stream.set_write_timeout(Some(Duration::from_secs(1)));
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let chunk = line.repeat(64);
    let mut sent = 0usize;
    while sent < mib << 20 {
        match std::io::Write::write(&mut p.stream, &chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let stalled = sent < mib << 20;
    let fresh =
        Peer::connect(addr).is_ok_and(|mut f| f.welcome().is_ok() && f.round_trip("are you there"));
    let mut said = format!(
        "wrote {} MiB of lines without reading; the writes {}; a fresh client was {}",
        sent >> 20,
        if stalled {
            "stalled (the server stopped reading)"
        } else {
            "never stalled: the server took everything"
        },
        if fresh { "served" } else { "NOT served" }
    );
    if let (Some(pid), Some(before)) = (pid, rss_before) {
        let after = procs::rss_kib(pid);
        said += &format!(
            "; server RSS {} → {} MiB",
            before >> 10,
            after.max(before) >> 10
        );
    }
    Ok(Outcome::new(stalled && fresh, said))
}

/// Idle clients for `seconds`: the server's CPU ticks meanwhile (100 per second is a
/// core spinning; a quiet loop uses a handful).
pub fn idle(addr: SocketAddr, seconds: u64) -> Provoked {
    let Some(pid) = procs::server_pid(addr) else {
        return Err(format!(
            "no process on this machine listens on {addr}'s port"
        ));
    };
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(open(addr)?);
    }
    let before = procs::cpu_ticks(pid);
    // The idle time is the provocation: a spinning server burns it.
    thread::sleep(Duration::from_secs(seconds));
    let used = procs::cpu_ticks(pid) - before;
    let budget = seconds * 100 / 4;
    let all_served = held.iter_mut().all(|p| p.round_trip("still here"));
    Ok(Outcome::new(
        used <= budget && all_served,
        format!(
            "5 idle clients for {seconds} s: the server used {used} clock ticks of CPU \
             ({}% of a core){}",
            used * 100 / (seconds * 100).max(1),
            if all_served {
                ""
            } else {
                "; and they were NOT answered after"
            }
        ),
    ))
}

/// N clients each send one line at the same moment (with the server stopped meanwhile, when
/// it runs here as our user), `rounds` times: every client must get every reply. Against a
/// small provided-buffer ring (lesson 15 `--bufs 4`) the burst runs the ring dry (ENOBUFS).
pub fn burst(addr: SocketAddr, n: usize, rounds: usize) -> Provoked {
    raise_nofile();
    let pid = procs::server_pid(addr);
    let mut peers = Vec::new();
    for _ in 0..n {
        peers.push(open(addr)?);
    }
    let mut hung = vec![false; n];
    let mut answered = 0;
    for round in 0..rounds {
        procs::while_stopped(pid, || {
            for (i, p) in peers.iter_mut().enumerate() {
                let _ = p.send(format!("client {i} round {round}\n").as_bytes());
            }
        });
        // One deadline for all: a client that hangs costs patience() once per round.
        let by = Instant::now() + patience();
        for (i, p) in peers.iter_mut().enumerate() {
            if hung[i] {
                continue;
            }
            let want = reversed(format!("client {i} round {round}").as_bytes());
            match p.line_by(by) {
                Got::Line(l) if l == want => answered += 1,
                _ => hung[i] = true,
            }
        }
    }
    let hung = hung.iter().filter(|&&h| h).count();
    let how = if pid.is_some() {
        "server stopped while they sent"
    } else {
        "server not ours to stop"
    };
    Ok(Outcome::new(
        hung == 0,
        format!(
            "{n} clients × {rounds} rounds of one line each at once ({how}): {answered} of {} \
             replies, {hung} clients left hanging",
            n * rounds
        ),
    ))
}

/// The checker's step (workshop's echo rules): a slow reader behind a 4 KiB receive buffer
/// sends 1,000 lines, q and 64 KiB more, `tries` times; every reply must arrive.
pub fn quit_slow_reader(addr: SocketAddr, tries: usize) -> Provoked {
    workshop::client::set_wait(patience());
    match workshop::echo::slow_reader_keeps_replies(addr, tries) {
        Ok(()) => Ok(Outcome::new(
            true,
            format!(
                "{tries} slow readers (SO_RCVBUF 4 KiB) sent 1,000 lines, q and 64 KiB more: \
                 every reply arrived, then the close"
            ),
        )),
        Err(f) if f.expected == "the connection accepted" => Err(f.got),
        Err(f) => Ok(Outcome::new(
            false,
            format!(
                "a slow reader (SO_RCVBUF 4 KiB) sent 1,000 lines, q and 64 KiB more: {}",
                f.got
            ),
        )),
    }
}
