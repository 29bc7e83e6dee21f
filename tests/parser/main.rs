//! The Dockerfile parser and shell-word expansion against the reference and BuildKit's vectors.
//!
//! One test binary for the suites below (link time: each binary links the
//! whole engine); run one suite with `cargo test --test parser SUITE::`.

mod bounded_inputs;
mod parser_errors;
mod parser_heredoc;
mod parser_random;
mod parser_reference;
mod parser_syntax;
mod shell_conformance;
