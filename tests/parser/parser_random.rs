//! Robustness without a fuzzer: thousands of deterministic pseudo-random
//! inputs (a simple LCG) must parse or fail with an error, never panic, and
//! errors must point inside the input.

use kiln::dockerfile;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        // Knuth's MMIX constants.
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that steer random text into the parser's interesting paths.
const FRAGMENTS: &[&str] = &[
    "FROM a\n",
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "SHELL ",
    "CMD ",
    "ENTRYPOINT ",
    "VOLUME ",
    "EXPOSE ",
    "USER ",
    "WORKDIR ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "NONE",
    "CMD",
    " AS ",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"E\"",
    "3<<",
    "EOF\n",
    "\tEOF\n",
    "E\n",
    "\\\n",
    "`\n",
    "\\",
    "`",
    "\"",
    "'",
    "[",
    "]",
    "[\"a\"",
    ", ",
    "{}",
    "--",
    "--mount=",
    "type=cache",
    "type=secret",
    ",",
    "=",
    "target=/x",
    "--network=none",
    "--link",
    "--link=",
    "--from=",
    "--chown=1",
    "--interval=",
    "1m30s",
    ".5",
    "ms",
    "--retries=",
    "--exclude=*",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=y\n",
    "#",
    "\n",
    "\r\n",
    " ",
    "\t",
    "é",
    "µs",
    "\u{feff}",
    "\u{a0}",
    "$X",
    "${",
    "a",
    "b=c",
    "0",
];

fn random_input(rng: &mut Lcg) -> String {
    let pieces = 1 + rng.below(40);
    let mut s = String::new();
    if rng.below(3) == 0 {
        s.push_str("FROM a\n");
    }
    for _ in 0..pieces {
        if rng.below(8) == 0 {
            // A raw random char, including controls and multi-byte ones.
            let c = char::from_u32(rng.below(0x3000) as u32).unwrap_or('x');
            s.push(c);
        } else {
            s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
        }
    }
    s
}

fn check(input: &str) {
    match dockerfile::parse(input, "Dockerfile") {
        Ok(d) => {
            let lines = input.split('\n').count().max(1);
            for i in &d.instructions {
                assert!(i.span.line >= 1 && i.span.line <= i.span.end_line && i.span.end_line <= lines, "{input:?}");
                assert!(i.span.column >= 1);
            }
        }
        Err(e) => {
            let lines = input.split('\n').count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines} for {input:?}: {}", e.line, e.message);
            assert!(e.column >= 1, "{input:?}");
            let _ = e.render(input);
        }
    }
}

#[test]
fn random_fragment_soup_never_panics() {
    let mut rng = Lcg(0x6b696c6e);
    for _ in 0..4000 {
        check(&random_input(&mut rng));
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Lcg(42);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn truncations_of_a_real_dockerfile_never_panic() {
    let full = "# syntax=docker/dockerfile:1\nARG V=1\nFROM --platform=$BUILDPLATFORM golang:$V AS build\nRUN --mount=type=cache,target=/root/.cache \\\n    --network=none <<EOF bash\nset -e\n\tgo build\nEOF\nCOPY --from=build --chmod=755 <<-'X' /app/\n\tx\nX\nHEALTHCHECK --interval=1m CMD [\"true\"]\nONBUILD COPY . /src\n";
    for end in 0..=full.len() {
        if full.is_char_boundary(end) {
            check(&full[..end]);
        }
    }
}
