//! The name resolver: the one thing that blocks, on threads of its own.
//!
//! getaddrinfo(3) has no non-blocking form and cannot be cancelled: a lookup can take
//! seconds, or hang until the C library gives up. The loop queues each name and goes on; a
//! pool of threads takes the names, one lookup per thread at a time, and when an answer is
//! ready writes one byte to a pipe whose read end is in the loop's poll set (EventMachine's
//! `EM.defer`). The pool keeps [`FLOOR`] threads; when a name arrives and no thread is idle
//! it clones one more, up to [`CAP`]; an extra thread idle for [`IDLE`] ends. A name already
//! queued or being looked up is not looked up again: the client joins the lookup in flight
//! (Go's singleflight) and every waiting client gets its answer, each with its own port. So
//! a slow name holds up only its own thread however many ask for it, and only distinct names
//! that hang can fill the pool: then new names wait in the queue, and the log says so once.

use std::collections::{HashMap, VecDeque};
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

/// A name to look up, and until when its latest client waits for it.
type Job = (String, Instant);
/// A finished lookup: for whom, and the addresses (or why there are none).
pub type Lookup = (ConnId, std::io::Result<Vec<SocketAddr>>);
/// What a thread sends back: the name, and its addresses (port 0), or None when it was not
/// looked up because every client's deadline had passed.
type Answer = (String, Option<std::io::Result<Vec<SocketAddr>>>);
/// A client waiting for a name: who, its port, and until when it waits.
type Waiter = (ConnId, u16, Instant);

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
    answer: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
    /// The loop's own map: every name queued or in flight, and the clients waiting for it
    /// (none, once they all left a lookup that cannot be stopped: a new client joins it).
    waiting: HashMap<String, Vec<Waiter>>,
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
        let (answer, answers) = mpsc::channel::<Answer>();
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
            waiting: HashMap::new(),
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

    /// Joins the lookup of `name` if one is queued or in flight; else queues one, and clones
    /// a thread if none is idle and the cap allows.
    pub fn lookup(&mut self, id: ConnId, name: &str, port: u16, until: Instant) {
        // DNS names are case-insensitive: one lookup for Example.COM and example.com.
        let name = name.to_ascii_lowercase();
        let now = Instant::now();
        if let Some(waiters) = self.waiting.get_mut(&name) {
            // Shared: one more client for the same answer. Clients past their deadline
            // were answered 0x04 already; they leave the list here.
            waiters.retain(|w| w.2 > now);
            waiters.push((id, port, until));
            // Still queued: it must not be skipped while this client waits.
            if let Some(job) = self.shared.lock().jobs.iter_mut().find(|j| j.0 == name) {
                job.1 = job.1.max(until);
            }
            return;
        }
        self.waiting.insert(name.clone(), vec![(id, port, until)]);
        self.queue(name, until);
    }

    /// Puts a name in the queue for the threads.
    fn queue(&mut self, name: String, until: Instant) {
        let mut queue = self.shared.lock();
        queue.jobs.push_back((name, until));
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

    /// The client left while its lookup was pending. A name nobody waits for any more is
    /// never looked up if still queued; one in flight cannot be stopped: it stays listed
    /// (so a new client for it joins it), and its answer will find nobody.
    pub fn forget(&mut self, id: ConnId) {
        let Some(name) = self.waiting.iter_mut().find_map(|(name, waiters)| {
            let before = waiters.len();
            waiters.retain(|w| w.0 != id);
            (waiters.len() < before && waiters.is_empty()).then(|| name.clone())
        }) else {
            return;
        };
        let mut queue = self.shared.lock();
        if let Some(at) = queue.jobs.iter().position(|j| j.0 == name) {
            queue.jobs.remove(at);
            self.waiting.remove(&name);
        }
    }

    /// The pipe woke the loop: drain it, then hand each finished lookup to every client
    /// waiting for its name, with the client's own port.
    pub fn done(&mut self) -> Vec<Lookup> {
        let mut bytes = [0u8; 256];
        // read(2) the wake-up bytes until the pipe is empty (EAGAIN).
        while let Ok(n) = read(&self.wake, &mut bytes) {
            if n == 0 {
                break;
            }
        }
        let mut lookups = Vec::new();
        let answers: Vec<Answer> = self.answers.try_iter().collect();
        for (name, result) in answers {
            let waiters = self.waiting.remove(&name).unwrap_or_default();
            let Some(result) = result else {
                // Skipped (its deadline had passed), but a client that joined meanwhile
                // still waits: queue the name again for it.
                let now = Instant::now();
                let waiters: Vec<Waiter> = waiters.into_iter().filter(|w| w.2 > now).collect();
                if let Some(until) = waiters.iter().map(|w| w.2).max() {
                    self.waiting.insert(name.clone(), waiters);
                    self.queue(name, until);
                }
                continue;
            };
            for (id, port, _) in waiters {
                let each = match &result {
                    Ok(addrs) => Ok(addrs
                        .iter()
                        .map(|a| SocketAddr::new(a.ip(), port))
                        .collect()),
                    Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
                };
                lookups.push((id, each));
            }
        }
        if self.full && self.shared.lock().jobs.is_empty() {
            self.full = false;
            say!("resolver: the queue is empty again");
        }
        lookups
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
fn work(shared: &Shared, answer: &mpsc::Sender<Answer>) {
    let mut queue = shared.lock();
    loop {
        let Some((name, until)) = queue.jobs.pop_front() else {
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
        // Past its deadline every client was answered (0x04) and closed already: skip it,
        // but say so (a client may have joined since).
        let addrs = (Instant::now() < until).then(|| {
            // getaddrinfo(3), through std: may block here, never in the loop.
            (name.as_str(), 0)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>())
        });
        if answer.send((name, addrs)).is_err() {
            return;
        }
        // write(2) one byte: the loop's poll wakes up. EAGAIN (a full pipe) means a
        // wake-up is pending anyway.
        match write(&shared.waker, b"!") {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(errno) => report("write (resolver pipe)", errno),
        }
        queue = shared.lock();
    }
}
