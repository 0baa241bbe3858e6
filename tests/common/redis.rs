//! A redis-server the test starts on a free loopback port (memory only), and one client
//! connection to it: lesson 13's store in its tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use protocols::resp::{encode_command, parse, Value};

use super::DEADLINE;

/// A redis-server child on 127.0.0.1:`port`, and one client connection to it.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    pub conn: TcpStream,
}

impl Redis {
    /// Starts redis-server on a free port.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts redis-server on a free port, with `extra` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(redis) = Redis::start_on_with(port, extra) {
                return redis;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts redis-server on `port` and waits until it answers PING (None if it exits).
    pub fn start_on(port: u16) -> Option<Redis> {
        Redis::start_on_with(port, &[])
    }

    pub fn start_on_with(port: u16, extra: &[&str]) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return None; // the port was taken meanwhile
            }
            if let Some(conn) = pong(port) {
                return Some(Redis { child, port, conn });
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("redis-server never answered PING");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One command, one reply.
    pub fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut out = Vec::new();
        encode_command(&args, &mut out);
        self.conn.write_all(&out).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((value, _)) = parse(&buf).unwrap() {
                return value;
            }
            let n = self.conn.read(&mut chunk).unwrap();
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        assert_eq!(
            self.cmd(&["SET", key, value]),
            Value::SimpleString("OK".into())
        );
    }

    /// A line of `INFO section`, e.g. `total_connections_received`.
    pub fn info(&mut self, section: &str, field: &str) -> String {
        let Value::Bulk(Some(text)) = self.cmd(&["INFO", section]) else {
            panic!("INFO is a bulk string");
        };
        let text = String::from_utf8(text).unwrap();
        let prefix = format!("{field}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn addr_arg(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A connection to 127.0.0.1:`port` that got PONG to its PING.
fn pong(port: u16) -> Option<TcpStream> {
    let conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    encode_command(&[b"PING"], &mut out);
    (&conn).write_all(&out).ok()?;
    let mut buf = [0u8; 64];
    let n = (&conn).read(&mut buf).ok()?;
    (&buf[..n] == b"+PONG\r\n").then_some(conn)
}

impl Redis {
    pub fn child_signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}
