//! The name resolver: the one thing that blocks, on a thread of its own.
//!
//! getaddrinfo(3) has no non-blocking form: a lookup can take seconds. The loop hands each
//! name to this thread and goes on; when an answer is ready the thread writes one byte to a
//! pipe whose read end is in the loop's poll set (EventMachine's `EM.defer`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, read, write};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::say;

use crate::admission::ConnId;

/// A lookup to do: for whom, what, and until when the client waits for it.
type Job = (ConnId, String, u16, Instant);
/// A finished lookup: for whom, and the addresses (or why there are none).
pub type Lookup = (ConnId, std::io::Result<Vec<SocketAddr>>);

pub struct Resolver {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<Lookup>,
    /// The pipe's read end, watched by poll.
    pub wake: OwnedFd,
}

impl Resolver {
    /// The pipe and the thread.
    pub fn spawn() -> Resolver {
        // pipe2(O_NONBLOCK): the loop drains it without blocking; a full pipe means a
        // wake-up is already pending, so the thread's write may fail with EAGAIN.
        let (wake, waker) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2");
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (answer, answers) = mpsc::channel::<Lookup>();
        let thread = std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                for (id, name, port, until) in job_queue {
                    // Past its deadline the client was answered (0x04) and closed already:
                    // skip it, so one slow name does not make every lookup behind it late.
                    if Instant::now() >= until {
                        continue;
                    }
                    // getaddrinfo(3), through std: may block here, never in the loop.
                    let addrs = (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>());
                    if answer.send((id, addrs)).is_err() {
                        break;
                    }
                    // write(2) one byte: the loop's poll wakes up. EAGAIN (a full pipe)
                    // means a wake-up is pending anyway.
                    match write(&waker, b"!") {
                        Ok(_) | Err(Errno::EAGAIN) => {}
                        Err(errno) => report("write (resolver pipe)", errno),
                    }
                }
            });
        if let Err(err) = thread {
            say!("cannot start the resolver thread: {err}");
            std::process::exit(1);
        }
        Resolver {
            jobs,
            answers,
            wake,
        }
    }

    /// Queues a lookup of `name`; false if the thread is gone.
    pub fn lookup(&self, id: ConnId, name: &str, port: u16, until: Instant) -> bool {
        self.jobs.send((id, name.to_string(), port, until)).is_ok()
    }

    /// The pipe woke the loop: drain it, then take every finished lookup.
    pub fn done(&self) -> Vec<Lookup> {
        let mut bytes = [0u8; 256];
        // read(2) the wake-up bytes until the pipe is empty (EAGAIN).
        while let Ok(n) = read(&self.wake, &mut bytes) {
            if n == 0 {
                break;
            }
        }
        self.answers.try_iter().collect()
    }
}
