//! The lessons' named regions, and what is cut from them.
//!
//! One marker serves the docs and the exercises (unpv13e's `include fig` idea): a lesson's
//! source marks a run of lines with a comment line `// [name]` before it and `// [/name]`
//! after it. The docs quote a region (`make docs` copies it into the fenced block after an
//! `<!-- include lessons/FILE [name] -->` line, and a test fails when a block is stale); an
//! exercise's skeleton is its lesson with some regions replaced by a `todo!` (exercises/).
//! So the docs, the exercises and the code cannot drift apart.

pub mod docs;
pub mod regions;
