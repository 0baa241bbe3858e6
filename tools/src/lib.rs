//! What the tools share that is no lesson's business: the echo load clients' flags, counts
//! and report ([`load`]), reading a process tree's CPU time
//! and memory from /proc ([`procfs`]), a private network namespace for a benchmark
//! ([`netns`]), a UDP load client through SOCKS5 UDP ASSOCIATE ([`udpload`]), and finding the lesson binaries they drive ([`bin_dir`], [`lesson_bin`]).

pub mod load;
pub mod netns;
pub mod procfs;
pub mod udpload;

use std::path::PathBuf;

/// The directory of the workspace's binaries (`target/release`, `target/debug`): the one
/// this tool runs from. The lessons are another package of the same workspace, so Cargo
/// puts them there too (`make compare` and `make bench-socks` build both).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("a binary lives in a directory");
    // A test binary runs from target/<profile>/deps; the binaries sit one level up.
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of binary `name` (`lesson-03`, `loadgen`) in [`bin_dir`], or a panic that says
/// how to build it: a test of this package reaches the lessons' binaries only this way
/// (`CARGO_BIN_EXE_*` names a package's own binaries), so `cargo test -p tools` alone needs
/// `cargo build --workspace --bins` first; `make test` builds the whole workspace.
pub fn lesson_bin(name: &str) -> String {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}
