//! kiln's filesystem formats.
