//! The Dockerfile parser: directives, lines, heredocs, typed instructions and
//! the shell-word expansion docker applies to instruction arguments.
//!
//! Layers, each in its own file: `lexer` (physical lines to logical lines
//! with positions, heredoc bodies), `directives`, `words` (the three ways
//! docker splits arguments), `flags`, `heredoc` (markers), `mount`,
//! `duration`, `ids` (numeric owners), `instructions` (typed commands, with
//! HEALTHCHECK's options in `instructions/healthcheck`) and `parser` (the
//! driver and file-level rules). `ast` is the result and `error` its errors;
//! `shell` is the word expansion the planner applies later (errors in
//! `shell/error`, wildcard patterns in `shell/pattern`).

pub mod ast;
pub mod error;
pub mod ids;
pub mod shell;

mod directives;
pub mod duration;
mod flags;
mod heredoc;
mod instructions;
mod lexer;
mod mount;
mod parser;
mod words;

pub use ast::*;
pub use error::DockerfileError;

/// Parses Dockerfile text. `path` is the name errors carry (e.g.
/// `Dockerfile`). Nothing is expanded: words stay as written for the planner.
pub fn parse(source: &str, path: &str) -> Result<Dockerfile, DockerfileError> {
    parser::parse(source, path)
}
