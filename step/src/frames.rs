//! Which source line made a call: unwind the stopped thread's stack from .eh_frame (framehop,
//! so glibc's frames, which have no frame pointers, unwind too), then look each return
//! address of the lesson's binary up in its line tables (addr2line; release builds carry
//! `debug = "line-tables-only"`), inlined frames included. The frame shown is the first in
//! the lesson's own files (`lessons/...`); where the call was made in the project's `src/`,
//! that frame comes first, then the lesson's line that led there.

use std::collections::HashMap;
use std::fs;
use std::rc::Rc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
use nix::unistd::Pid;
use object::{Object, ObjectSection, ObjectSegment};

use crate::mem;

/// One source line: `lessons/01-hello.rs:63  match accept(&listener) {`.
#[derive(Clone, Debug)]
pub struct Line {
    pub file: String,
    pub line: u32,
    pub text: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}  {}", self.file, self.line, self.text)
    }
}

struct Process {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    /// (avma range, bias, path) of every file-backed module.
    modules: Vec<(std::ops::Range<u64>, u64, String)>,
}

#[derive(Default)]
pub struct Frames {
    processes: HashMap<i32, Process>,
    lines: HashMap<String, Option<Rc<addr2line::Loader>>>,
}

struct Mapping {
    start: u64,
    end: u64,
    offset0_start: Option<u64>,
}

fn maps(tgid: Pid) -> Vec<(String, Mapping)> {
    let mut by_path: Vec<(String, Mapping)> = Vec::new();
    let Ok(text) = fs::read_to_string(format!("/proc/{tgid}/maps")) else {
        return by_path;
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with('/') {
            continue;
        }
        let Some((s, e)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(s), Ok(e), Ok(off)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        let joined = f[5..].join(" ");
        // A file replaced on disk since it was mapped (a rebuild) is listed "(deleted)".
        let path = joined
            .strip_suffix(" (deleted)")
            .unwrap_or(&joined)
            .to_string();
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, m)) => {
                m.start = m.start.min(s);
                m.end = m.end.max(e);
                if off == 0 && m.offset0_start.is_none() {
                    m.offset0_start = Some(s);
                }
            }
            None => by_path.push((
                path,
                Mapping {
                    start: s,
                    end: e,
                    offset0_start: (off == 0).then_some(s),
                },
            )),
        }
    }
    by_path
}

fn section(file: &object::File, name: &str) -> (Option<std::ops::Range<u64>>, Option<Vec<u8>>) {
    match file.section_by_name(name) {
        Some(s) => (
            Some(s.address()..s.address() + s.size()),
            s.data().ok().map(|d| d.to_vec()),
        ),
        None => (None, None),
    }
}

/// The path of `tgid`'s executable, as /proc/PID/exe names it (without " (deleted)").
fn exe_path(tgid: Pid) -> String {
    let exe = fs::read_link(format!("/proc/{tgid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string()
}

/// Where to read the file mapped at `path`: the process's own executable through
/// /proc/PID/exe, which opens the inode it runs even if a rebuild has since replaced the
/// file at its path (the addresses would not match the new one); other files by path.
fn source(tgid: Pid, path: &str) -> String {
    if path == exe_path(tgid) {
        format!("/proc/{tgid}/exe")
    } else {
        path.to_string()
    }
}

fn load(tgid: Pid) -> Process {
    let mut unwinder = UnwinderX86_64::new();
    let mut modules = Vec::new();
    for (path, m) in maps(tgid) {
        let Some(offset0) = m.offset0_start else {
            continue;
        };
        let Ok(data) = fs::read(source(tgid, &path)) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        let first_vaddr = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        let bias = offset0.wrapping_sub(first_vaddr);
        let (text_svma, text) = section(&file, ".text");
        let (eh_frame_svma, eh_frame) = section(&file, ".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(&file, ".eh_frame_hdr");
        let (got_svma, _) = section(&file, ".got");
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            got_svma,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            ..Default::default()
        };
        unwinder.add_module(Module::new(path.clone(), m.start..m.end, bias, info));
        modules.push((m.start..m.end, bias, path));
    }
    Process {
        unwinder,
        cache: CacheX86_64::new(),
        modules,
    }
}

impl Frames {
    /// Forget what was loaded for a process (after an exec).
    pub fn forget(&mut self, tgid: Pid) {
        self.processes.remove(&tgid.as_raw());
        self.lines.remove(&format!("/proc/{tgid}/exe"));
    }

    /// The return addresses on `tid`'s stack, innermost first, each with its module's path
    /// and the address as the module states it (SVMA).
    fn stack(&mut self, tgid: Pid, tid: Pid) -> Vec<(String, u64)> {
        let Ok(regs) = nix::sys::ptrace::getregs(tid) else {
            return Vec::new();
        };
        let process = self
            .processes
            .entry(tgid.as_raw())
            .or_insert_with(|| load(tgid));
        let mut read = |addr: u64| mem::read_u64(tid, addr).ok_or(());
        let mut iter = process.unwinder.iter_frames(
            regs.rip,
            UnwindRegsX86_64::new(regs.rip, regs.rsp, regs.rbp),
            &mut process.cache,
            &mut read,
        );
        let mut out = Vec::new();
        let mut depth = 0;
        while let Ok(Some(frame)) = iter.next() {
            depth += 1;
            if depth > 256 {
                break;
            }
            let addr = match frame {
                FrameAddress::InstructionPointer(a) => a,
                FrameAddress::ReturnAddress(a) => a.get() - 1,
            };
            if let Some((_, bias, path)) =
                process.modules.iter().find(|(r, _, _)| r.contains(&addr))
            {
                out.push((path.clone(), addr - bias));
            }
        }
        out
    }

    /// The line-table reader for the file at `source` (see [`source`]).
    fn loader(&mut self, source: &str) -> Option<Rc<addr2line::Loader>> {
        self.lines
            .entry(source.to_string())
            .or_insert_with(|| addr2line::Loader::new(source).ok().map(Rc::new))
            .clone()
    }

    /// The source lines to show for the call `tid` is stopped at: the project's `src/` frame
    /// (if the call was made there) and the lesson's frame, or nothing if no frame of the
    /// stack is in a lesson's files.
    pub fn lines(&mut self, tgid: Pid, tid: Pid) -> Vec<Line> {
        let exe = exe_path(tgid);
        // Every (file, line) of the stack, inlined frames included, innermost first.
        let mut chain: Vec<(String, u32)> = Vec::new();
        for (path, svma) in self.stack(tgid, tid) {
            if path != exe {
                continue;
            }
            let Some(loader) = self.loader(&source(tgid, &path)) else {
                continue;
            };
            let Ok(mut frames) = loader.find_frames(svma) else {
                continue;
            };
            while let Ok(Some(frame)) = frames.next() {
                if let Some(loc) = frame.location {
                    if let (Some(file), Some(line)) = (loc.file, loc.line) {
                        chain.push((file.to_string(), line));
                    }
                }
            }
        }
        let Some(at) = chain.iter().position(|(f, _)| lesson_rel(f).is_some()) else {
            return Vec::new();
        };
        let (lesson_file, lesson_line) = &chain[at];
        let rel = lesson_rel(lesson_file).unwrap();
        let root = &lesson_file[..lesson_file.len() - rel.len()];
        let rel = &tidy(rel);
        let mut out = Vec::new();
        // The innermost frame of the project's own src/ below the lesson's frame.
        if let Some((file, line)) = chain[..at]
            .iter()
            .find(|(f, _)| f.strip_prefix(root).is_some_and(|r| r.starts_with("src/")))
        {
            let rel = file.strip_prefix(root).unwrap_or(file);
            out.push(source_line(root, rel, *line));
        }
        out.push(source_line(root, rel, *lesson_line));
        out
    }
}

/// A relative path without `..`: a module another lesson mounts with #[path] is named by its
/// own place (`lessons/13-socks5-allow/../12-socks5/relay.rs` → `lessons/12-socks5/relay.rs`).
fn tidy(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            "." | "" => {}
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// `lessons/01-hello.rs` from a path that contains a `lessons/` directory.
fn lesson_rel(path: &str) -> Option<&str> {
    if path.starts_with("lessons/") {
        return Some(path);
    }
    path.rfind("/lessons/").map(|i| &path[i + 1..])
}

fn source_line(root: &str, rel: &str, line: u32) -> Line {
    let text = fs::read_to_string(format!("{root}{rel}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .nth(line.saturating_sub(1) as usize)
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default();
    Line {
        file: rel.to_string(),
        line,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::{lesson_rel, tidy};

    #[test]
    fn a_mounted_module_is_named_by_its_own_place() {
        let full = "/w/lessons/13-socks5-allow/../12-socks5/relay.rs";
        let rel = lesson_rel(full).unwrap();
        assert_eq!(rel, "lessons/13-socks5-allow/../12-socks5/relay.rs");
        assert_eq!(tidy(rel), "lessons/12-socks5/relay.rs");
        assert_eq!(tidy("lessons/01-hello.rs"), "lessons/01-hello.rs");
        assert_eq!(
            lesson_rel("/home/u/.cargo/registry/src/nix-0.32.0/src/unistd.rs"),
            None
        );
    }
}
