//! Planning: ARG scoping, variable expansion and the stage graph.

pub mod types;

pub use types::*;
