//! Lesson 13 — stateful SOCKS5 proxy with a Redis allowlist.
//! Lesson 12's relay, plus an allowlist in Redis asked inside the same poll loop: before a
//! CONNECT, `GET allowed:<client ip>` on ONE persistent, non-blocking, pipelined connection.
//! Allowed iff the key exists and is not "0"; denied: REP 0x02; Redis down: REP 0x01.
//!
//! Read allowlist.rs (the Redis client) after lesson 12's relay.rs, whose loop it plugs into.
//! Run `make lesson-13` (it starts a private redis-server if none answers), then
//! `redis-cli set allowed:127.0.0.1 1` and `curl --socks5-hostname 127.0.0.1:1080 …`.
//! `make trace-13` shows one more socket, its connect = -1 EINPROGRESS to port 6379 and the
//! GETs' writes, all from the loop's own pid. The classic failure: Redis is down or frozen;
//! here the proxy fails closed and fast (a check waits at most `--redis-timeout`, 0.5 s),
//! keeps serving and redials (`--mistake fail-open` shows the wrong way;
//! `make provoke-13` stops Redis). More: docs/lessons/13-socks5-allow.md

// Generated from the lesson by `make exercise-NN`: each todo!() is a call to write.
// Until they are all written, the code after a todo!() is unreachable and some
// imports and helpers are unused: these allows keep the compiler's output to errors.
#![allow(unused, unreachable_code)]

// Lesson 12's relay, mounted (not copied): its flags, its loop and the hook this plugs in.
mod admission;
mod conn;
mod flags;
mod flow;
mod guard;
mod relay;
mod resolver;

mod allowlist;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Parser;
use protocols::resp::allowlist_key;
use sockets_by_hand::cli::{self, Hint, Lesson};
use sockets_by_hand::{lesson, mistake, net};

use allowlist::Allowlist;
use flags::RelayArgs;

const LESSON: Lesson = lesson!(1080, Hint::Socks5);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    relay: RelayArgs,

    /// The Redis server holding the allowlist (a host name is resolved once, at start).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:6379",
        value_parser = redis_addr
    )]
    redis: SocketAddr,

    /// Seconds an allowlist check may wait for Redis; past it the client is refused (0x01)
    /// and the Redis connection is dropped and redialled (a frozen Redis answers nothing).
    #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = flags::seconds)]
    redis_timeout: Duration,
}

fn redis_addr(text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text.to_socket_addrs().map_err(|e| e.to_string())?;
    addrs.next().ok_or_else(|| format!("{text}: no address"))
}

fn main() {
    let args: Args = cli::parse(&LESSON);
    let mut allowlist = Allowlist::new(args.redis, args.redis_timeout);
    let cli = match args.redis.to_string().as_str() {
        "127.0.0.1:6379" => "redis-cli".to_string(),
        _ => format!("redis-cli -h {} -p {}", args.redis.ip(), args.redis.port()),
    };
    // The key a client on this machine will really be looked up by (::1 gives allowed:::1).
    let key = allowlist_key(net::dialable(args.relay.listen.addr()).ip());
    let notes = [
        format!(
            "allowlist: Redis at {} (key allowed:<client ip>; no cache, asked per connection; \
             {:?} at most per check)",
            args.redis, args.redis_timeout
        ),
        format!("allow: {cli} set {key} 1"),
        format!("deny:  {cli} del {key}"),
    ];
    relay::serve(&LESSON, &args.relay, &notes, &mut allowlist);
}
