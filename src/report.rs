//! Rendering errors for users.
