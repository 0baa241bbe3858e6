//! `--mistake NAME`: a lesson run with one classic mistake switched on (Stevens' failure
//! first: the broken server, the client that breaks it, then the one line that fixes it).
//!
//! A lesson declares its mistakes once, with [`mistakes!`](crate::mistakes): each variant's
//! doc comment is its one line in `--help` (clap lists them under `--mistake`, and an unknown
//! name is a usage error that lists the valid ones). The lesson's code then reads like the
//! naive code beside the right code:
//!
//! ```ignore
//! sockets_by_hand::mistakes! {
//!     /// assumes one read is one line: split or coalesced lines are answered wrongly
//!     OneReadOneLine,
//! }
//! // in Args:  #[arg(long, value_name = "NAME")] mistake: Option<Mistake>,
//! // in main:  mistake::switch_on(&MISTAKE, args.mistake);  (the banner then says so)
//! if mistake(OneReadOneLine) { /* the wrong code */ } else { /* the right code */ }
//! ```
//!
//! The switch is set once at start (a `OnceLock`, never `static mut`); without `--mistake`
//! `mistake(..)` is one load and a compare, off every hot path that matters.

use std::sync::OnceLock;

use clap::ValueEnum;

/// Which mistake this run has switched on, if any: set once by [`switch_on`].
pub struct Switch<M: 'static>(OnceLock<M>);

impl<M: Copy + PartialEq> Switch<M> {
    /// No mistake yet.
    pub const fn new() -> Self {
        Switch(OnceLock::new())
    }

    /// Is `m` the mistake this run was started with?
    pub fn is(&self, m: M) -> bool {
        self.0.get() == Some(&m)
    }

    /// The mistake switched on, if any.
    pub fn get(&self) -> Option<M> {
        self.0.get().copied()
    }
}

impl<M: Copy + PartialEq> Default for Switch<M> {
    fn default() -> Self {
        Self::new()
    }
}

/// The banner's line for the mistake switched on in this process, if any.
static BANNER_NOTE: OnceLock<String> = OnceLock::new();

/// Switches `chosen` on (once, at start). The banner ([`crate::cli::banner`]) then ends with
/// `MISTAKE ON: --mistake one-read-one-line (assumes one read is one line: …). Run without
/// --mistake for the fix.`
pub fn switch_on<M: ValueEnum + Copy + PartialEq>(switch: &Switch<M>, chosen: Option<M>) {
    let Some(m) = chosen else {
        return;
    };
    // A second call keeps the first choice: the switch is decided once, at start.
    let _ = switch.0.set(m);
    let _ = BANNER_NOTE.set(note(m));
}

/// The banner's line for the mistake switched on, if any (see [`switch_on`]).
pub fn banner_note() -> Option<&'static str> {
    BANNER_NOTE.get().map(String::as_str)
}

/// The banner line for mistake `m`.
pub fn note<M: ValueEnum>(m: M) -> String {
    let (name, help) = match m.to_possible_value() {
        Some(value) => (
            value.get_name().to_string(),
            value.get_help().map(|h| h.to_string()).unwrap_or_default(),
        ),
        None => ("?".to_string(), String::new()),
    };
    if help.is_empty() {
        format!("MISTAKE ON: --mistake {name}. Run without --mistake for the fix.")
    } else {
        format!("MISTAKE ON: --mistake {name} ({help}). Run without --mistake for the fix.")
    }
}

/// Declares a lesson's mistakes: `enum Mistake` (a clap `ValueEnum`, each variant's doc
/// comment its `--help` line), `static MISTAKE` (the [`Switch`]) and `fn mistake(m) -> bool`.
#[macro_export]
macro_rules! mistakes {
    // `mistakes! { pub ... }`: for a module whose mistakes its parent switches on (lesson
    // 03's serve.rs, mounted by 04 and 05 too).
    (pub $( $(#[doc = $doc:literal])* $name:ident ),+ $(,)?) => {
        $crate::mistakes!(@declare [pub] $( $(#[doc = $doc])* $name ),+);
    };
    (@declare [$($vis:tt)*] $( $(#[doc = $doc:literal])* $name:ident ),+) => {
        /// This lesson's classic mistakes; `--mistake NAME` switches one on.
        #[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
        $($vis)* enum Mistake {
            $( $(#[doc = $doc])* $name ),+
        }
        /// The mistake this run was started with (`--mistake`), if any.
        $($vis)* static MISTAKE: $crate::mistake::Switch<Mistake> = $crate::mistake::Switch::new();
        /// Is `m` the mistake this run was started with?
        #[allow(dead_code)]
        $($vis)* fn mistake(m: Mistake) -> bool {
            MISTAKE.is(m)
        }
    };
    ($( $(#[doc = $doc:literal])* $name:ident ),+ $(,)?) => {
        $crate::mistakes!(@declare [] $( $(#[doc = $doc])* $name ),+);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
    enum Demo {
        /// one read is one line
        OneReadOneLine,
        /// close with unread input
        PlainClose,
    }

    #[test]
    fn a_switch_is_off_until_switched_on_and_names_its_mistake() {
        let switch: Switch<Demo> = Switch::new();
        assert!(!switch.is(Demo::OneReadOneLine));
        switch_on(&switch, None);
        assert!(!switch.is(Demo::OneReadOneLine));
        let note = note(Demo::PlainClose);
        switch_on(&switch, Some(Demo::PlainClose));
        assert!(switch.is(Demo::PlainClose));
        assert!(!switch.is(Demo::OneReadOneLine));
        assert_eq!(
            note,
            "MISTAKE ON: --mistake plain-close (close with unread input). Run without \
             --mistake for the fix."
        );
    }

    #[derive(clap::Parser, Debug)]
    struct Args {
        #[arg(long, value_name = "NAME")]
        mistake: Option<Demo>,
    }

    #[test]
    fn an_unknown_name_is_a_usage_error_listing_the_valid_ones() {
        use clap::Parser;
        let err = Args::try_parse_from(["x", "--mistake", "nope"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("one-read-one-line"), "{text}");
        assert!(text.contains("plain-close"), "{text}");
        assert_eq!(err.exit_code(), 2);
        let ok = Args::try_parse_from(["x", "--mistake", "plain-close"]).unwrap();
        assert_eq!(ok.mistake, Some(Demo::PlainClose));
    }

    mod declared {
        crate::mistakes! {
            /// a leak
            LeakFd,
            /// no reap
            NoReap,
        }

        #[test]
        fn the_macro_declares_the_enum_the_switch_and_the_test() {
            assert!(!mistake(Mistake::LeakFd));
            crate::mistake::switch_on(&MISTAKE, Some(Mistake::NoReap));
            let note = crate::mistake::note(Mistake::NoReap);
            assert!(note.contains("--mistake no-reap (no reap)"));
            // The banner's line is set (by this or another test of this process: one per run).
            assert!(crate::mistake::banner_note().is_some_and(|n| n.starts_with("MISTAKE ON")));
            assert!(mistake(Mistake::NoReap) && !mistake(Mistake::LeakFd));
        }
    }

    mod outer {
        mod inner {
            crate::mistakes! {
                pub
                /// one read is one line
                OneReadOneLine,
            }
        }

        #[test]
        fn pub_mistakes_can_be_switched_on_from_the_parent_module() {
            crate::mistake::switch_on(&inner::MISTAKE, Some(inner::Mistake::OneReadOneLine));
            let note = crate::mistake::note(inner::Mistake::OneReadOneLine);
            assert!(note.contains("--mistake one-read-one-line"));
            assert!(inner::mistake(inner::Mistake::OneReadOneLine));
        }
    }
}
