//! Why the kernel refused a call, when the answer is the sandbox and not the kernel.
//!
//! `io_uring_setup` returns ENOSYS both on a kernel without io_uring and under a seccomp
//! filter that forbids it; container runtimes' default filters do (podman's answers ENOSYS,
//! Docker's EPERM), and a learner told "this kernel has no io_uring" on Linux 6.x goes the
//! wrong way. So the words are chosen from what this process can see: the kernel's release
//! (uname), whether seccomp filters are on it (`Seccomp: 2` in /proc/self/status), the sysctl
//! kernel.io_uring_disabled, and the marks a container runtime leaves. Lessons 11 and 15 call
//! [`explain_io_uring_setup`]; [`io_uring_refusal`] is the same choice without the looking.
//!
//! Likewise root is not enough to make namespaces in a container, which drops CAP_SYS_ADMIN:
//! [`has_cap_sys_admin`] tells the tests and `bench-socks` to make a user namespace first.

use std::ffi::CStr;

use nix::errno::Errno;

/// The run option that lets io_uring through a container's seccomp profile; docs/container.md
/// shows it in the whole command.
pub const SECCOMP_OPTION: &str = "--security-opt seccomp=unconfined";

/// What this process can see of its sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The kernel's release as uname(2) gives it, e.g. `6.1.0-18-amd64`.
    pub release: Option<String>,
    /// Seccomp filters are installed on this process (`Seccomp: 2`); None where
    /// /proc/self/status could not be read.
    pub seccomp_filter: Option<bool>,
    /// /proc/sys/kernel/io_uring_disabled (Linux 6.6+): 0 allowed, 1 only for root and the
    /// group kernel.io_uring_group, 2 never.
    pub io_uring_disabled: Option<u8>,
    /// The container runtime whose mark this process sees, if any.
    pub container: Option<&'static str>,
}

impl Facts {
    /// Looks: uname(2), /proc/self/status, /proc/sys/kernel/io_uring_disabled, and the files
    /// podman (/run/.containerenv) and Docker (/.dockerenv) leave in a container.
    pub fn here() -> Facts {
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
        let container = if std::path::Path::new("/run/.containerenv").exists() {
            Some("podman")
        } else if std::path::Path::new("/.dockerenv").exists() {
            Some("docker")
        } else {
            None
        };
        Facts {
            release: kernel_release(),
            seccomp_filter: status.map(|s| {
                s.lines().any(|l| {
                    l.split_once(':')
                        .is_some_and(|(k, v)| k == "Seccomp" && v.trim() == "2")
                })
            }),
            io_uring_disabled: disabled.and_then(|s| s.trim().parse().ok()),
            container,
        }
    }
}

/// uname(2)'s release field.
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain bytes; uname fills it and NUL-terminates each field.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// `(major, minor)` of a release such as `6.18.44-fc-v1252`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The lines that say why io_uring_setup failed with `errno`, given `facts`; none for an
/// errno that is not a refusal (EINVAL, ENOMEM, … speak for themselves).
pub fn io_uring_refusal(errno: Errno, facts: &Facts) -> Vec<String> {
    if errno != Errno::ENOSYS && errno != Errno::EPERM {
        return Vec::new();
    }
    let kernel = facts.release.as_deref().unwrap_or("this kernel");
    match facts.io_uring_disabled {
        Some(2) if errno == Errno::EPERM => {
            return vec![
                "io_uring is switched off on this machine: the sysctl \
                 kernel.io_uring_disabled is 2 (sudo sysctl kernel.io_uring_disabled=0 allows it)"
                    .into(),
            ];
        }
        Some(1) if errno == Errno::EPERM && facts.seccomp_filter == Some(false) => {
            return vec![
                "io_uring is for root and the group kernel.io_uring_group only on this \
                 machine (the sysctl kernel.io_uring_disabled is 1)"
                    .into(),
            ];
        }
        _ => {}
    }
    let old = facts
        .release
        .as_deref()
        .and_then(version)
        .is_some_and(|v| v < (5, 1));
    if old && errno == Errno::ENOSYS {
        return vec![format!(
            "{kernel} has no io_uring: Linux 5.1 added it (and its later operations came later)"
        )];
    }
    if facts.seccomp_filter == Some(false) && errno == Errno::ENOSYS {
        // Nothing filters this process: the kernel itself answered (in a container, the
        // host's kernel: on macOS or Windows, the Linux VM's).
        return vec![format!(
            "{kernel} answers ENOSYS with no seccomp filter in the way: it was built without \
             io_uring (CONFIG_IO_URING)"
        )];
    }
    let mut lines = vec![format!(
        "{kernel} has io_uring, so something in between refuses it: most likely a seccomp \
         profile, and container runtimes' default profiles block io_uring"
    )];
    if facts.seccomp_filter == Some(true) {
        lines.push(
            "this process runs under a seccomp filter (Seccomp: 2 in /proc/self/status)".into(),
        );
    }
    let runtime = facts.container.unwrap_or("docker or podman");
    lines.push(format!(
        "in a container, start it with `{runtime} run {SECCOMP_OPTION} …` (docs/container.md; \
         the dev container in .devcontainer/ does)"
    ));
    lines
}

/// Says [`io_uring_refusal`]'s lines for this process on stderr, one line each.
pub fn explain_io_uring_setup(errno: Errno) {
    for line in io_uring_refusal(errno, &Facts::here()) {
        crate::cli::say_line(line);
    }
}

/// io_uring_setup failed (lessons 11 and 15): the call and its errno, TLPI style, then why in
/// words ([`explain_io_uring_setup`]: an old kernel, a sysctl, or a container's seccomp
/// profile), and exit 1.
pub fn io_uring_setup_failed(err: std::io::Error) -> ! {
    let errno = Errno::from_raw(err.raw_os_error().unwrap_or(0));
    crate::errors::report("io_uring_setup", errno);
    explain_io_uring_setup(errno);
    std::process::exit(1)
}

/// CAP_SYS_ADMIN, capability(7)'s number 21.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process may make network and mount namespaces as it is (CAP_SYS_ADMIN in its
/// effective set). Root on a Linux machine may; root in a container usually may not (the
/// runtime drops the capability), and there, like any other user, it makes a user namespace
/// of its own first (`unshare -r`), inside which it has the capability.
pub fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective_caps(&status).is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The `CapEff:` mask of a /proc/PID/status text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(release: &str, seccomp: bool, container: Option<&'static str>) -> Facts {
        Facts {
            release: Some(release.into()),
            seccomp_filter: Some(seccomp),
            io_uring_disabled: Some(0),
            container,
        }
    }

    #[test]
    fn new_kernel_under_seccomp_names_the_run_option_not_the_kernel() {
        for errno in [Errno::ENOSYS, Errno::EPERM] {
            let text = io_uring_refusal(errno, &facts("6.18.44", true, Some("podman"))).join("\n");
            assert!(text.contains("seccomp"), "{text}");
            assert!(
                text.contains("podman run --security-opt seccomp=unconfined"),
                "{text}"
            );
            assert!(!text.contains("has no io_uring"), "{text}");
        }
    }

    #[test]
    fn old_kernel_is_blamed_only_when_it_is_old() {
        let text =
            io_uring_refusal(Errno::ENOSYS, &facts("4.19.0-27-amd64", true, None)).join("\n");
        assert!(text.contains("4.19.0-27-amd64 has no io_uring"), "{text}");
        let text = io_uring_refusal(Errno::ENOSYS, &facts("5.1.0", true, None)).join("\n");
        assert!(text.contains("seccomp"), "{text}");
    }

    #[test]
    fn no_filter_means_the_kernel_was_built_without_it() {
        for container in [None, Some("docker")] {
            let f = facts("6.1.0", false, container);
            let text = io_uring_refusal(Errno::ENOSYS, &f).join("\n");
            assert!(text.contains("CONFIG_IO_URING"), "{text}");
        }
        // Where /proc cannot tell, a seccomp profile stays the likely reason.
        let mut f = facts("6.1.0", false, Some("podman"));
        f.seccomp_filter = None;
        let text = io_uring_refusal(Errno::ENOSYS, &f).join("\n");
        assert!(text.contains("seccomp=unconfined"), "{text}");
        assert!(!text.contains("CONFIG_IO_URING"), "{text}");
    }

    #[test]
    fn the_sysctl_is_named_when_it_is_the_reason() {
        let mut f = facts("6.8.0", false, None);
        f.io_uring_disabled = Some(2);
        let text = io_uring_refusal(Errno::EPERM, &f).join("\n");
        assert!(text.contains("kernel.io_uring_disabled is 2"), "{text}");
    }

    #[test]
    fn other_errors_get_no_explanation() {
        assert!(io_uring_refusal(Errno::ENOMEM, &facts("6.1.0", true, None)).is_empty());
    }

    #[test]
    fn cap_sys_admin_is_read_from_the_effective_set() {
        // Root on a machine (this one) and root in a podman container (its default set).
        let host = "CapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n";
        let container = "CapPrm:\t00000000800405fb\nCapEff:\t00000000800405fb\n";
        assert!(effective_caps(host).is_some_and(|c| c & (1 << CAP_SYS_ADMIN) != 0));
        assert!(effective_caps(container).is_some_and(|c| c & (1 << CAP_SYS_ADMIN) == 0));
        assert_eq!(effective_caps("Name:\tx\n"), None);
    }

    #[test]
    fn versions_parse() {
        assert_eq!(version("6.18.44-fc-v1252"), Some((6, 18)));
        assert_eq!(version("5.1"), Some((5, 1)));
        assert_eq!(version("junk"), None);
    }
}
