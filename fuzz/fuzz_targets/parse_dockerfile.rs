//! Any UTF-8 text must parse to a Dockerfile or a positioned error, never a
//! panic; errors must point at a line that exists and render.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lines = text.split('\n').count().max(1);
    match kiln::dockerfile::parse(text, "Dockerfile") {
        Ok(file) => {
            for instruction in &file.instructions {
                assert!(instruction.span.line >= 1);
                assert!(instruction.span.line <= instruction.span.end_line);
                assert!(instruction.span.end_line <= lines);
            }
        }
        Err(err) => {
            assert!(err.line >= 1 && err.line <= lines);
            assert!(err.column >= 1);
            let _ = err.render(text);
        }
    }
});
