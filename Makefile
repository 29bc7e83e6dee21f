# kiln — the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
KILN  := target/debug/kiln
DEMO  := target/demo

.PHONY: build demo test lint unit integration fuzz fuzz-apply bench clean-demo

build:
	$(CARGO) build --workspace --locked

# Builds a real image FROM scratch holding Debian's static busybox and runs it
# with `kiln run`; then, when runc or crun and umoci are there, exports it as an
# OCI image layout and runs that too. Checks its prerequisites first and prints
# the command that installs what is missing.
demo:
	@bash examples/prereqs.sh demo
	$(CARGO) build --workspace --locked
	bash examples/demo.sh $(KILN) $(DEMO)

test:
	@bash examples/prereqs.sh test
	$(CARGO) build --workspace --locked
	$(MAKE) --no-print-directory lint
	$(CARGO) test --workspace --locked --no-fail-fast

# rustfmt.toml's layout, and the rules of [workspace.lints] with warnings as errors:
# tests may unwrap (a failed step is a failed test), the libraries and the
# binary may not.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings -A clippy::unwrap_used
	$(CARGO) clippy --workspace --lib --bins --locked -- -D warnings

unit:
	$(CARGO) test --workspace --exclude kiln-integration --locked

integration: build
	$(CARGO) test -p kiln-integration --locked

# kiln against rootless buildah, side by side, into BENCHMARKS.md (issue 11's
# cases; ~15 min). BENCH_CASES=cached11,rand512 picks cases, BENCH_REPS=N the
# runs per case, BENCH_KEEP=1 keeps target/bench; see bench/bench.sh.
bench:
	$(CARGO) build --release --locked
	bash bench/bench.sh target/release/kiln target/bench

# Bounded fuzz runs of the Dockerfile parser and the layer applier (needs cargo-fuzz).
fuzz: fuzz-apply
	cd fuzz && mkdir -p corpus && cargo +nightly fuzz run parse_dockerfile corpus seeds -- -max_total_time=120 -max_len=4096

# Bounded fuzz run of the layer applier: arbitrary layer blobs must never change
# anything outside the root they are applied to (needs cargo-fuzz; as root the
# target confines itself to a private tmpfs). Seeds: fuzz/make_apply_seeds.py.
fuzz-apply:
	cd fuzz && mkdir -p corpus-apply && cargo +nightly fuzz run apply_layer corpus-apply seeds_apply_layer -- -max_total_time=120 -max_len=65536 -rss_limit_mb=4096

clean-demo:
	rm -rf $(DEMO)
