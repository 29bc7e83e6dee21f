# kiln — the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
KILN  := target/debug/kiln
DEMO  := target/demo

.PHONY: build demo test unit integration fuzz bench clean-demo

build:
	$(CARGO) build --workspace --locked

# Builds a real image FROM scratch holding Debian's static busybox, exports it as
# an OCI image layout and runs it.
demo: build
	bash examples/demo.sh $(KILN) $(DEMO)

test: build
	$(CARGO) test --workspace --locked --no-fail-fast

unit:
	$(CARGO) test --workspace --exclude kiln-integration --locked

integration: build
	$(CARGO) test -p kiln-integration --locked

# kiln against buildah, side by side: cold, cached and incremental builds.
bench:
	$(CARGO) build --release --locked
	bash bench/bench.sh target/release/kiln target/bench

# Bounded fuzz runs of the Dockerfile parser and the layer applier (needs cargo-fuzz).
# The applier target works in /tmp/kiln-fuzz-apply: one worker only.
fuzz:
	cd fuzz && mkdir -p corpus corpus-apply && cargo +nightly fuzz run parse_dockerfile corpus seeds -- -max_total_time=120 -max_len=4096
	cd fuzz && cargo +nightly fuzz run apply_layer corpus-apply seeds-apply -- -max_total_time=120 -max_len=16384

clean-demo:
	rm -rf $(DEMO)
