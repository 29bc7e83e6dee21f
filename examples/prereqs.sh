#!/usr/bin/env bash
# make demo / make test, first step: check what they need and, when something
# is missing, print the one command that installs it, before anything builds.
# Usage: prereqs.sh demo|test
set -uo pipefail
what=${1:-demo}
min_rust=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml" | head -n 1)
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo "
status=0

# Rust: the toolchain rustup installs. Debian 12's own cargo is too old to read
# Cargo.lock, so a found cargo is checked against rust-version too.
version_ok() { [ "$(printf '%s\n%s\n' "$min_rust" "$1" | sort -V | head -n 1)" = "$min_rust" ]; }
rust_hint() {
    if command -v rustup >/dev/null; then
        echo "    rustup default stable"
    elif apt-cache show rustup >/dev/null 2>&1; then
        echo "    ${sudo}apt-get install -y rustup && rustup default stable"
    else
        echo "    install rustup with the installer from Rust's website, then: rustup default stable"
    fi
}
if ! command -v cargo >/dev/null; then
    echo "$what: Rust (cargo) $min_rust or newer is missing; install it with:" >&2
    rust_hint >&2
    status=1
else
    have=$(cargo --version | awk '{print $2}')
    if ! version_ok "$have"; then
        echo "$what: cargo $have is older than the Rust $min_rust kiln needs; update with:" >&2
        rust_hint >&2
        status=1
    fi
fi

# make test checks formatting and lints: rustup's rustfmt and clippy components.
if [ "$what" = test ] && command -v cargo >/dev/null; then
    comps=()
    cargo fmt --version >/dev/null 2>&1 || comps+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || comps+=(clippy)
    if [ ${#comps[@]} -gt 0 ]; then
        echo "$what: cargo's ${comps[*]} missing; install with:" >&2
        echo "    rustup component add ${comps[*]}" >&2
        status=1
    fi
fi

# Debian packages: a command each, and the package that has it.
declare -A pkg_of=([newuidmap]=uidmap [skopeo]=skopeo)
need_files=(/bin/busybox)
if [ "$what" = test ]; then
    pkg_of+=([umoci]=umoci [oci-image-tool]=oci-image-tool [crun]=crun [runc]=runc [fuse-overlayfs]=fuse-overlayfs
             [xz]=xz-utils [bzip2]=bzip2 [zstd]=zstd [docker-registry]=docker-registry [htpasswd]=apache2-utils
             [openssl]=openssl [git]=git [socat]=socat [buildah]=buildah [podman]=podman [setfattr]=attr
             [debootstrap]=debootstrap [pasta]=passt [slirp4netns]=slirp4netns)
    need_files+=(/usr/bin/time)
fi
missing=()
for cmd in "${!pkg_of[@]}"; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("${pkg_of[$cmd]}")
done
for f in "${need_files[@]}"; do
    [ -x "$f" ] || case "$f" in /bin/busybox) missing+=(busybox-static) ;; /usr/bin/time) missing+=(time) ;; esac
done
if [ ${#missing[@]} -gt 0 ]; then
    list=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "$what: these Debian/Ubuntu packages are missing; install them with:" >&2
    echo "    ${sudo}apt-get install -y ${list% }" >&2
    status=1
fi
exit $status
