//! The name resolver: the one thing that blocks, on threads of its own.
//!
//! getaddrinfo(3) has no non-blocking form and cannot be cancelled: a lookup can take
//! seconds, or hang until the C library gives up. The loop queues each name and goes on; a
//! pool of threads takes the names, one lookup per thread at a time, and when an answer is
//! ready writes one byte to a pipe whose read end is in the loop's poll set (EventMachine's
//! `EM.defer`). The pool keeps [`FLOOR`] threads; when a name arrives and no thread is idle
//! it clones one more, up to [`CAP`]; an extra thread idle for [`IDLE`] ends. So a slow name
//! holds up only its own thread, and only names that hang can fill the pool: then new names
//! wait in the queue, and the log says so once per episode.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, read, write};
use sockets_by_hand::errors::{report, OrDie};
use sockets_by_hand::say;

use crate::admission::ConnId;

/// Threads kept while the relay is idle.
pub const FLOOR: usize = 1;
/// Lookups in flight at most; beyond it names queue.
pub const CAP: usize = 32;
/// How long a thread above the floor waits for a name before it ends.
pub const IDLE: Duration = Duration::from_secs(2);

/// A lookup to do: for whom, what, and until when the client waits for it.
type Job = (ConnId, String, u16, Instant);
/// A finished lookup: for whom, and the addresses (or why there are none).
pub type Lookup = (ConnId, std::io::Result<Vec<SocketAddr>>);

/// What the loop and the threads share: the names not yet taken, and the pool's count.
struct Queue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a name is queued: one idle thread wakes to take it.
    queued: Condvar,
    /// The pipe's write end: one byte per finished lookup wakes the loop.
    waker: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct Resolver {
    shared: Arc<Shared>,
    answer: mpsc::Sender<Lookup>,
    answers: mpsc::Receiver<Lookup>,
    /// Names are waiting because all CAP threads are busy (logged once until it clears).
    full: bool,
    /// The pipe's read end, watched by poll.
    pub wake: OwnedFd,
}

impl Resolver {
    /// The pipe and the floor's threads.
    pub fn spawn() -> Resolver {
        // pipe2(O_NONBLOCK): the loop drains it without blocking; a full pipe means a
        // wake-up is already pending, so a thread's write may fail with EAGAIN.
        let (wake, waker) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).or_die("pipe2");
        let (answer, answers) = mpsc::channel::<Lookup>();
        let queue = Queue {
            jobs: VecDeque::new(),
            threads: 0,
            idle: 0,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            queued: Condvar::new(),
            waker,
        });
        let resolver = Resolver {
            shared,
            answer,
            answers,
            full: false,
            wake,
        };
        for _ in 0..FLOOR {
            if let Err(err) = resolver.clone_thread(&mut resolver.shared.lock()) {
                say!("cannot start a resolver thread: {err}");
                std::process::exit(1);
            }
        }
        resolver
    }

    /// Queues a lookup of `name`; clones a thread if none is idle and the cap allows.
    pub fn lookup(&mut self, id: ConnId, name: &str, port: u16, until: Instant) {
        let mut queue = self.shared.lock();
        queue.jobs.push_back((id, name.to_string(), port, until));
        if queue.jobs.len() <= queue.idle {
            self.shared.queued.notify_one();
        } else if queue.threads < CAP {
            // clone(2) through std::thread: one more lookup in flight. If it fails the
            // name waits for a thread that is already there.
            if let Err(err) = self.clone_thread(&mut queue) {
                say!("resolver: cannot start another thread ({err}); the name waits");
            }
        } else if !self.full {
            self.full = true;
            say!(
                "resolver: all {CAP} threads are waiting for answers (a DNS server that does \
                 not answer?); new names wait in the queue until one returns"
            );
        }
    }

    /// The client left while its lookup was pending: a name still queued is never looked
    /// up; one in flight cannot be stopped, and its answer will find nobody.
    pub fn forget(&self, id: ConnId) {
        self.shared.lock().jobs.retain(|job| job.0 != id);
    }

    /// The pipe woke the loop: drain it, then take every finished lookup.
    pub fn done(&mut self) -> Vec<Lookup> {
        let mut bytes = [0u8; 256];
        // read(2) the wake-up bytes until the pipe is empty (EAGAIN).
        while let Ok(n) = read(&self.wake, &mut bytes) {
            if n == 0 {
                break;
            }
        }
        if self.full && self.shared.lock().jobs.is_empty() {
            self.full = false;
            say!("resolver: the queue is empty again");
        }
        self.answers.try_iter().collect()
    }

    /// One more thread in the pool (the caller holds the queue's lock).
    fn clone_thread(&self, queue: &mut Queue) -> std::io::Result<()> {
        let (shared, answer) = (self.shared.clone(), self.answer.clone());
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || work(&shared, &answer))?;
        queue.threads += 1;
        Ok(())
    }
}

/// A resolver thread: takes names until it has been idle for IDLE above the floor.
fn work(shared: &Shared, answer: &mpsc::Sender<Lookup>) {
    let mut queue = shared.lock();
    loop {
        let Some((id, name, port, until)) = queue.jobs.pop_front() else {
            queue.idle += 1;
            let (again, waited) = shared
                .queued
                .wait_timeout(queue, IDLE)
                .unwrap_or_else(PoisonError::into_inner);
            queue = again;
            queue.idle -= 1;
            if waited.timed_out() && queue.jobs.is_empty() && queue.threads > FLOOR {
                queue.threads -= 1;
                return;
            }
            continue;
        };
        drop(queue);
        // Past its deadline the client was answered (0x04) and closed already: skip it.
        if Instant::now() < until {
            // getaddrinfo(3), through std: may block here, never in the loop.
            let addrs = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            if answer.send((id, addrs)).is_err() {
                return;
            }
            // write(2) one byte: the loop's poll wakes up. EAGAIN (a full pipe) means a
            // wake-up is pending anyway.
            match write(&shared.waker, b"!") {
                Ok(_) | Err(Errno::EAGAIN) => {}
                Err(errno) => report("write (resolver pipe)", errno),
            }
        }
        queue = shared.lock();
    }
}
