//! The Dockerfile parser: directives, lines, heredocs, typed instructions and
//! the shell-word expansion docker applies to instruction arguments.

pub mod ast;
pub mod error;
pub mod shell;

pub use ast::*;
pub use error::DockerfileError;
