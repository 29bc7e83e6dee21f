//! kiln's privilege boundary: user namespaces, id maps, mount namespaces and
//! running one process. Filled in by the rootless RUN work; builds without RUN
//! need none of it.
