//! The SOCKS5 lessons' classic mistakes, each switched on with `--mistake` and
//! caught, then the same scenario passing without it: `success-always` and `no-half-close`
//! (lesson 12's relay, mounted by 13 too), `fail-open` (lesson 13). `blocking-dns` needs
//! a private resolver and is in tests/socks5_dns.rs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};

use common::socks5::{self as s5, closed_port, pseudo_random, reply_after_eof_target};
use common::{Server, DEADLINE};
use protocols::socks5::{Command as Cmd, Reply, Target};

fn lesson_12(mistake: Option<&str>) -> Server {
    match mistake {
        Some(name) => Server::start(exe!("lesson-12"), &["--mistake", name]),
        None => Server::start(exe!("lesson-12"), &[]),
    }
}

/// The reply to a CONNECT to a loopback port where nothing listens.
fn reply_for_closed_port(proxy: &Server) -> Reply {
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    let (_reserved, port) = closed_port();
    s5::request(&mut s, Cmd::Connect, &Target::Ip(port)).0
}

#[test]
fn success_always_makes_a_refused_target_look_open() {
    let proxy = lesson_12(Some("success-always"));
    proxy.log.wait_line("the banner's mistake line", |l| {
        l.contains("MISTAKE ON: --mistake success-always")
    });
    assert_eq!(reply_for_closed_port(&proxy), Reply::Succeeded);
    let proxy = lesson_12(None);
    assert_eq!(reply_for_closed_port(&proxy), Reply::ConnectionRefused);
}

/// Sends 100,000 bytes, half-closes, and reads what comes back: the target's answer, or
/// nothing if the relay closed both ways at the client's EOF.
fn answer_after_half_close(proxy: &Server) -> String {
    let mut s = s5::open(proxy.addr, reply_after_eof_target());
    s.write_all(&pseudo_random(100_000, 5)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read after half-close: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn no_half_close_loses_the_answer() {
    let proxy = lesson_12(Some("no-half-close"));
    assert_eq!(answer_after_half_close(&proxy), "");
    let proxy = lesson_12(None);
    assert_eq!(answer_after_half_close(&proxy), "got 100000 bytes\n");
}

/// Lesson 13 whose Redis is down (nothing listens on its port): may 127.0.0.1 CONNECT?
fn verdict_with_redis_down(mistake: Option<&str>) -> Reply {
    let (_reserved, redis) = closed_port();
    let redis = redis.to_string();
    let mut args = vec!["--redis", redis.as_str()];
    args.extend(mistake.iter().flat_map(|m| ["--mistake", *m]));
    let proxy = Server::start(exe!("lesson-13"), &args);
    let echo = s5::echo_target();
    // The first CONNECT may find the link still connecting: its answer then comes when the
    // connect fails. Either way the outage decides it.
    let mut s = s5::connect(proxy.addr);
    assert_eq!(s5::greet(&mut s, &[0]), 0);
    s5::request(&mut s, Cmd::Connect, &Target::Ip(echo)).0
}

#[test]
fn fail_open_lets_everyone_in_while_redis_is_down() {
    assert_eq!(verdict_with_redis_down(Some("fail-open")), Reply::Succeeded);
    assert_eq!(verdict_with_redis_down(None), Reply::GeneralFailure);
}

#[test]
fn an_unknown_mistake_is_a_usage_error_naming_the_valid_ones() {
    for (exe, names) in [
        (
            exe!("lesson-12"),
            &["blocking-dns", "success-always", "no-half-close"][..],
        ),
        (exe!("lesson-13"), &["no-half-close", "fail-open"][..]),
    ] {
        let out = Command::new(exe)
            .args(["--mistake", "nope"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{exe}");
        let err = String::from_utf8_lossy(&out.stderr);
        for name in names {
            assert!(err.contains(name), "{exe}: {name} not in: {err}");
        }
    }
}
