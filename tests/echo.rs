//! The shared echo-protocol suite, once per echo lesson. A new echo lesson joins here with
//! one line.

mod common;

echo_suite!(lesson_03, "lesson-03");
