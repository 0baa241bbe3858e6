//! The lessons' named regions, and what is cut from them.
//!
//! One marker serves the docs and the exercises (unpv13e's `include fig` idea): a lesson's
//! source marks a run of lines with a comment line `// [name]` before it and `// [/name]`
//! after it. The docs quote a region (`make docs` copies it into the fenced block after an
//! `<!-- include lessons/FILE [name] -->` line, and a test fails when a block is stale); an
//! exercise's skeleton is its lesson with some regions replaced by a `todo!` ([`skeleton`]).
//! So the docs, the exercises and the code cannot drift apart.
//!
//! And the checker behind `make check-NN` ([`check`]): named steps, the protocol rules the
//! project's own tests walk too ([`echo`], [`socks`]), and the model, judged from the
//! system calls the server's processes made ([`calls`], recorded by [`trace`]) and from what
//! the kernel shows in /proc ([`model`]). std, libc and the std-only `protocols` only:
//! `make check-03` builds in seconds.

pub mod calls;
pub mod capture;
pub mod check;
pub mod client;
pub mod docs;
pub mod echo;
pub mod learner;
pub mod lessons;
pub mod model;
pub mod regions;
pub mod run;
pub mod skeleton;
pub mod socks;
pub mod trace;
