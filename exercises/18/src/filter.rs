// Generated from lessons/18-capture/filter.rs by exercises/18/exercise.txt: write its todo!()s.
//! Lesson 18's filter: a classic BPF program (the one `tcpdump -d 'port N'` prints, cut down
//! to TCP and UDP), written out instruction by instruction, and its SO_ATTACH_FILTER.
//!
//! The kernel runs it on every frame before the frame is queued to the socket: a frame it
//! returns 0 for is never copied, never woken for, never counted as a drop. It returns how
//! many bytes to keep, which is how a snap length is applied inside the kernel.
//!
//! An instruction is `{ code, jt, jf, k }`; a jump's `jt`/`jf` count the instructions to
//! skip after it (0 = the next one). The accumulator A and the index register X are the
//! machine's only registers. Offsets are from the Ethernet header's first byte.

use std::os::fd::{AsRawFd, OwnedFd};

use libc::{sock_filter, sock_fprog};
use libc::{BPF_ABS, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX};
use libc::{BPF_MSH, BPF_RET, BPF_W};
use nix::errno::Errno;

/// One instruction that does not jump.
const fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// One conditional jump: compare A with `k`; on true skip `jt` instructions, else `jf`.
const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The program for this run: the port filter, or without `--port` one that keeps every
/// frame (but for loopback's outgoing copies), cut to the snap length in the kernel.
pub fn program(port: Option<u16>, snaplen: u32, loopback: bool) -> Vec<sock_filter> {
    match port {
        Some(port) => port_filter(port, snaplen, loopback),
        None => {
            // [0] keep: the snap length; [1] drop (reached only from drop_outgoing).
            let mut program = vec![stmt(BPF_RET | BPF_K, snaplen), stmt(BPF_RET | BPF_K, 0)];
            if loopback {
                program.splice(0..0, drop_outgoing(2));
            }
            program
        }
    }
}

/// The program for "TCP or UDP, over IPv6 or IPv4, from or to `port`": keep `snaplen`
/// bytes of what matches, nothing of the rest. On a loopback device it also drops the
/// copy of each packet going out, so that every packet is seen once, coming in.
fn port_filter(port: u16, snaplen: u32, loopback: bool) -> Vec<sock_filter> {
    let port = u32::from(port);
    let mut program = vec![
        // [0] A = the EtherType, the 16 bits at offset 12.
        stmt(BPF_LD | BPF_H | BPF_ABS, 12),
        // [1] IPv6? on to [2]; else to [9], the IPv4 path.
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x86dd, 0, 7),
        // [2] A = IPv6's Next Header (14 + 6); extension headers are not followed.
        stmt(BPF_LD | BPF_B | BPF_ABS, 20),
        // [3] TCP? to [5]; else [4].
        jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0),
        // [4] UDP? to [5]; else drop ([21]).
        jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 16),
        // [5] A = the source port, just after the 40-byte IPv6 header (14 + 40).
        stmt(BPF_LD | BPF_H | BPF_ABS, 54),
        // [6] Our port? keep ([20]); else [7].
        jump(BPF_JMP | BPF_JEQ | BPF_K, port, 13, 0),
        // [7] A = the destination port (14 + 40 + 2).
        stmt(BPF_LD | BPF_H | BPF_ABS, 56),
        // [8] Our port? keep ([20]); else drop ([21]).
        jump(BPF_JMP | BPF_JEQ | BPF_K, port, 11, 12),
        // [9] IPv4? on to [10]; else (ARP, ...) drop ([21]).
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x0800, 0, 11),
        // [10] A = IPv4's Protocol (14 + 9).
        stmt(BPF_LD | BPF_B | BPF_ABS, 23),
        // [11] TCP? to [13]; else [12].
        jump(BPF_JMP | BPF_JEQ | BPF_K, 6, 1, 0),
        // [12] UDP? to [13]; else drop ([21]).
        jump(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 8),
        // [13] A = the flags and fragment offset (14 + 6).
        stmt(BPF_LD | BPF_H | BPF_ABS, 20),
        // [14] A later fragment (offset not 0) carries no ports: drop ([21]); else [15].
        jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 6, 0),
        // [15] X = the IPv4 header's length, 4 × the low nibble of byte 14 (BPF's MSH).
        stmt(BPF_LDX | BPF_B | BPF_MSH, 14),
        // [16] A = the source port, at X + 14.
        stmt(BPF_LD | BPF_H | BPF_IND, 14),
        // [17] Our port? keep ([20]); else [18].
        jump(BPF_JMP | BPF_JEQ | BPF_K, port, 2, 0),
        // [18] A = the destination port, at X + 16.
        stmt(BPF_LD | BPF_H | BPF_IND, 16),
        // [19] Our port? keep ([20]); else drop ([21]).
        jump(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 1),
        // [20] keep: return how many bytes to keep, the snap length.
        stmt(BPF_RET | BPF_K, snaplen),
        // [21] drop: keep no byte.
        stmt(BPF_RET | BPF_K, 0),
    ];
    if loopback {
        let rest = program.len();
        program.splice(0..0, drop_outgoing(rest));
    }
    program
}

/// Two instructions to put first on a loopback device, where each packet passes twice:
/// drop the copy going out. `rest` is the length of the program after them, whose last
/// instruction is the drop.
fn drop_outgoing(rest: usize) -> [sock_filter; 2] {
    [
        // A = the packet's type: an ancillary load (SKF_AD_OFF + SKF_AD_PKTTYPE), what the
        // kernel knows of the frame, not a byte of it.
        stmt(
            BPF_LD | BPF_W | BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32,
        ),
        // PACKET_OUTGOING? to the drop, the last instruction; else on to the program.
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(libc::PACKET_OUTGOING),
            (rest - 1) as u8,
            0,
        ),
    ]
}

/// setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, {len, filter}): the kernel checks the program
/// (no backward jumps, every path ends in a return) and runs it on every frame from now on.
pub fn attach(sock: &OwnedFd, program: &[sock_filter]) -> Result<(), Errno> {
    let prog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut sock_filter,
    };
    let rc: libc::c_int = todo!("setsockopt(2): libc::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog as *const sock_fprog, size_of::<sock_fprog>()) in an unsafe block; man 7 socket, SO_ATTACH_FILTER");
    Errno::result(rc).map(drop)
}
