//! The Dockerfile parser: directives, lines, heredocs, typed instructions and
//! the shell-word expansion docker applies to instruction arguments.
//!
//! Layers, each in its own file: `lexer` (physical lines to logical lines
//! with positions, heredoc bodies), `directives`, `words` (the three ways
//! docker splits arguments), `flags`, `heredoc` (markers), `mount`,
//! `duration`, `instructions` (typed commands) and `parser` (the driver and
//! file-level rules).

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
