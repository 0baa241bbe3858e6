//! Errors that tell the truth inside a container: lesson 11 started under a real seccomp
//! filter that refuses io_uring_setup (what podman's and Docker's default profiles do) must
//! name seccomp and the run option, and must not blame a kernel that has io_uring.
//!
//! The filter is installed in the child between fork and exec (prctl PR_SET_SECCOMP), so
//! no container runtime is needed: the lesson sees exactly the refusal a container gives.

mod common;

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Installs a seccomp filter on the calling process: io_uring_setup fails with `errno`,
/// every other call is allowed. Async-signal-safe (two prctl calls on a stack array), as
/// pre_exec requires.
fn refuse_io_uring_setup(errno: i32) -> io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_eq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut program = [
        // A = seccomp_data.nr (offset 0): the system call's number.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // io_uring_setup: go on to the refusal; anything else: skip it.
        jump_eq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | errno as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; fprog points to the program on this stack frame.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs lesson 11 on a free port under the filter; returns its stderr, after checking that
/// it exits 1 (it cannot serve without a ring).
fn lesson_11_refused(errno: i32) -> String {
    let mut cmd = Command::new(exe!("lesson-11"));
    cmd.args(["-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: refuse_io_uring_setup only calls prctl.
    unsafe { cmd.pre_exec(move || refuse_io_uring_setup(errno)) };
    let out = cmd.output().expect("run lesson-11");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "lesson 11 should exit 1:\n{err}"
    );
    err
}

#[test]
fn io_uring_refused_by_seccomp_names_seccomp_not_the_kernel() {
    for (errno, name) in [(libc::ENOSYS, "ENOSYS"), (libc::EPERM, "EPERM")] {
        let err = lesson_11_refused(errno);
        assert!(
            err.contains(&format!("io_uring_setup: {name}")),
            "{name}:\n{err}"
        );
        assert!(err.contains("seccomp"), "{name}: seccomp not named:\n{err}");
        assert!(
            err.contains("--security-opt seccomp=unconfined"),
            "{name}: the run option is not named:\n{err}"
        );
        // This machine's kernel has io_uring (the other lesson 11 tests run it), so the
        // lesson must not say it has none.
        assert!(
            !err.contains("has no io_uring"),
            "{name}: blames the kernel:\n{err}"
        );
        assert!(
            !err.contains("CONFIG_IO_URING"),
            "{name}: blames the kernel:\n{err}"
        );
    }
}
