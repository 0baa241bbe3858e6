//! tokio-echo — reference reverse echo on tokio (current-thread).
//! The reference row of `make compare` (not a lesson). The same reverse-echo
//! protocol ([`protocols::echo`]) on tokio's current-thread runtime: single-threaded
//! like the event-loop lessons, and what a Rust developer would write instead of them.
//! Same flags and banner as the lessons; `nc 127.0.0.1 23333` talks to it.

use std::net::SocketAddr;

use clap::Parser;
use protocols::echo::{Echo, WELCOME};
use sockets_by_hand::cli::{self, Hint, Lesson, Listen};
use sockets_by_hand::ending::Ending;
use sockets_by_hand::say;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Described, like the lessons, by this file's header.
const REFERENCE: Lesson = Lesson {
    source: include_str!("tokio-echo.rs"),
    default_port: 23333,
    hint: Hint::Nc,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

fn main() {
    let args: Args = cli::parse(&REFERENCE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| {
            say!("tokio runtime: {e}");
            std::process::exit(1)
        });
    runtime.block_on(serve(args.listen.addr()));
}

async fn serve(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
        say!("bind: {e}");
        std::process::exit(1)
    });
    let local = listener.local_addr().unwrap_or(addr);
    cli::banner(&REFERENCE, local, &[]);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(async move {
                    let ending = client(stream).await;
                    let _ = (peer, ending); // no per-connection log: this is the speed reference
                });
            }
            Err(e) => {
                say!("accept: {e}");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(mut stream: TcpStream) -> Ending {
    let _ = stream.set_nodelay(true);
    let mut echo = Echo::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 64);
    if stream.write_all(WELCOME).await.is_err() {
        return Ending::Eof;
    }
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Ending::Eof,
            Ok(n) => n,
        };
        out.clear();
        let status = echo.feed(&buf[..n], &mut out);
        if stream.write_all(&out).await.is_err() {
            return Ending::Eof;
        }
        if let Some(ending) = Ending::from_status(status) {
            return ending;
        }
    }
}
