//! The command line every lesson shares, and the banner it prints on start.
//!
//! Each lesson declares its own clap `Args` struct (its fields' doc comments are the flags'
//! help) and flattens [`Listen`] into it for `-i/--bind` and `-p/--port`. [`parse`] names the
//! command `lesson-NN`, takes `-h`/`--help`'s text from the lesson's header ([`Lesson`]) and
//! gives `--port` the lesson's default (23333 for the echo lessons, 1080 for the SOCKS5 ones).

use std::net::{IpAddr, SocketAddr};

use clap::{ArgMatches, CommandFactory};

use crate::net;

/// What a lesson says about itself on the command line and in its banner.
///
/// A lesson is described in one place: the `//!` header at the top of its source file.
/// Its first line, `//! Lesson 03 — interactive reverse echo, one client at a time.`, gives
/// the number and the title (the banner, `make help` and the README table use them); the
/// paragraph under it is `-h`'s text, and the whole header is `--help`'s. Build one with
/// [`lesson!`](crate::lesson), which includes the calling file's text.
#[derive(Debug, Clone, Copy)]
pub struct Lesson {
    /// The text of the lesson's main source file; only its `//!` header is read.
    pub source: &'static str,
    /// The port `-p` defaults to.
    pub default_port: u16,
    /// How the banner suggests talking to the lesson.
    pub hint: Hint,
}

/// The [`Lesson`] of the file it is written in: `const LESSON: Lesson = lesson!(23333,
/// Hint::Nc);`. Works in the lessons package (the workspace root), whose `file!()` paths
/// are relative to the manifest directory.
#[macro_export]
macro_rules! lesson {
    ($default_port:expr, $hint:expr) => {
        $crate::cli::Lesson {
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", file!())),
            default_port: $default_port,
            hint: $hint,
        }
    };
}

impl Lesson {
    /// The header's lines, without their `//!` (and the one space after it).
    fn header(&self) -> impl Iterator<Item = &'static str> {
        header_lines(self.source)
    }

    /// `Lesson 03` from the first line (or whatever names the program there).
    fn name(&self) -> &'static str {
        let first = self.header().next().unwrap_or("");
        first.split_once(" — ").map_or(first, |(name, _)| name)
    }

    /// `03`: the two digits of `lesson-03` (for a tool, its name).
    pub fn number(&self) -> &'static str {
        let name = self.name();
        name.strip_prefix("Lesson ").unwrap_or(name)
    }

    /// The title: the first line after the dash, without its full stop.
    pub fn title(&self) -> &'static str {
        let first = self.header().next().unwrap_or("");
        let title = first.split_once(" — ").map_or("", |(_, title)| title);
        title.strip_suffix('.').unwrap_or(title)
    }

    /// The program's name on the command line: `lesson-03` (or the tool's own name).
    pub fn program(&self) -> String {
        match self.name().strip_prefix("Lesson ") {
            Some(number) => format!("lesson-{number}"),
            None => self.name().to_string(),
        }
    }

    /// `-h`: the first line and the paragraph under it.
    pub fn about(&self) -> String {
        let lines: Vec<&str> = self.header().take_while(|l| !l.is_empty()).collect();
        lines.join("\n")
    }

    /// `--help`: the whole header.
    pub fn long_about(&self) -> String {
        let lines: Vec<&str> = self.header().collect();
        lines.join("\n").trim_end().to_string()
    }
}

/// The `//!` lines at the top of `source`, without the marker (after any plain `//` lines
/// before them: an exercise's file says first that it is generated).
pub fn header_lines(source: &str) -> impl Iterator<Item = &str> {
    source
        .lines()
        .skip_while(|line| line.starts_with("//") && !line.starts_with("//!"))
        .map_while(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
}

/// The "try:" part of the banner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// `try: nc 127.0.0.1 23333`
    Nc,
    /// `try: curl --socks5-hostname 127.0.0.1:1080 http://example.com/`
    Socks5,
    /// No hint (the client lesson prints its own).
    None,
}

/// `-i/--bind` and `-p/--port`: where a server listens.
#[derive(clap::Args, Debug, Clone)]
pub struct Listen {
    /// Address to listen on; an IPv6 literal such as ::1 works too. 0.0.0.0 or :: opens
    /// the lesson to the whole network.
    #[arg(
        short = 'i',
        long = "bind",
        value_name = "ADDR",
        default_value = "127.0.0.1"
    )]
    pub bind: IpAddr,

    /// Port to listen on; 0 lets the kernel pick a free one (the banner says which).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: u16,
}

impl Listen {
    /// The address to `bind(2)`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// Parses the command line for `lesson`: the program is named `lesson-NN` and `--port`
/// (where the lesson has one) defaults to the lesson's port. `-h` prints the header's first
/// paragraph, `--help` the whole header; a bad flag exits with clap's message and status 2.
pub fn parse<A: clap::Parser>(lesson: &Lesson) -> A {
    let matches: ArgMatches = command::<A>(lesson).get_matches();
    A::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// The clap command [`parse`] runs: `A`'s, renamed, with the lesson's default port.
pub fn command<A: CommandFactory>(lesson: &Lesson) -> clap::Command {
    let mut command = A::command()
        .name(lesson.program())
        .about(lesson.about())
        .long_about(lesson.long_about());
    if command.get_arguments().any(|arg| arg.get_id() == "port") {
        let port = lesson.default_port.to_string();
        command = command.mut_arg("port", |arg| arg.default_value(port).required(false));
    }
    command
}

/// The banner line: `lesson 03 · interactive reverse echo · listening on 127.0.0.1:23333 ·
/// try: nc 127.0.0.1 23333`, with the address the kernel really bound (so `-p 0` shows the
/// port it picked). Tests read the address from this line.
pub fn banner_line(lesson: &Lesson, local: SocketAddr) -> String {
    let mut line = format!(
        "{} · {} · listening on {local}",
        lesson.name().to_lowercase(),
        lesson.title()
    );
    let to = net::dialable(local);
    match lesson.hint {
        Hint::Nc => line.push_str(&format!(" · try: nc {} {}", to.ip(), to.port())),
        Hint::Socks5 => line.push_str(&format!(
            " · try: curl --socks5-hostname {to} http://example.com/"
        )),
        Hint::None => {}
    }
    line
}

/// Prints [`banner_line`], any extra notes (one per line), and last the `--mistake` line
/// when one is switched on ([`crate::mistake::switch_on`]), on stderr.
pub fn banner(lesson: &Lesson, local: SocketAddr, notes: &[&str]) {
    say_line(banner_line(lesson, local));
    for note in notes.iter().copied().chain(crate::mistake::banner_note()) {
        say_line(format!("  {note}"));
    }
}

/// Writes `line` and a newline to stderr in one `write(2)`; see [`crate::say!`].
pub fn say_line(mut line: String) {
    use std::io::Write;
    line.push('\n');
    // Nowhere to report a failing stderr; the lesson goes on without its log.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    const L: Lesson = Lesson {
        source: "//! Lesson 03 — interactive reverse echo.\n//! Lines come back reversed.\n//! q ends.\n//!\n//! Run `make lesson-03`.\n\nfn main() {}\n",
        default_port: 23333,
        hint: Hint::Nc,
    };

    #[test]
    fn the_header_describes_the_lesson() {
        assert_eq!(L.number(), "03");
        assert_eq!(L.title(), "interactive reverse echo");
        assert_eq!(L.program(), "lesson-03");
        assert_eq!(
            L.about(),
            "Lesson 03 — interactive reverse echo.\nLines come back reversed.\nq ends."
        );
        assert!(L.long_about().ends_with("Run `make lesson-03`."));
        let tool = Lesson {
            source: "//! tokio-echo — reference echo.\n",
            ..L
        };
        assert_eq!(
            (tool.number(), tool.program().as_str()),
            ("tokio-echo", "tokio-echo")
        );
        assert_eq!(tool.title(), "reference echo");
        // An exercise's file says first that it is generated; its header follows.
        let exercise = Lesson {
            source: "// Generated from lessons/03-interactive/main.rs.\n//! Lesson 03 — x.\n",
            ..L
        };
        assert_eq!((exercise.number(), exercise.title()), ("03", "x"));
    }

    #[test]
    fn banner_names_real_address_and_hint() {
        assert_eq!(
            banner_line(&L, "127.0.0.1:23333".parse().unwrap()),
            "lesson 03 · interactive reverse echo · listening on 127.0.0.1:23333 · try: nc 127.0.0.1 23333"
        );
        assert_eq!(
            banner_line(&L, "[::]:4000".parse().unwrap()),
            "lesson 03 · interactive reverse echo · listening on [::]:4000 · try: nc ::1 4000"
        );
    }

    #[derive(clap::Parser, Debug)]
    struct Args {
        #[command(flatten)]
        listen: Listen,
    }

    #[test]
    fn port_defaults_per_lesson() {
        let socks = Lesson {
            default_port: 1080,
            ..L
        };
        let m = command::<Args>(&socks).try_get_matches_from(["x", "-i", "::1"]);
        let args = Args::from_arg_matches(&m.unwrap()).unwrap();
        assert_eq!(args.listen.addr(), "[::1]:1080".parse().unwrap());
        let m = command::<Args>(&L).try_get_matches_from(["x", "-p", "0"]);
        let args = Args::from_arg_matches(&m.unwrap()).unwrap();
        assert_eq!(args.listen.addr(), "127.0.0.1:0".parse().unwrap());
        let bad = command::<Args>(&L).try_get_matches_from(["x", "-p", "70000"]);
        assert!(bad.is_err());
    }
}
