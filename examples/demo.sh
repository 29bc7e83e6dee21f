#!/usr/bin/env bash
# make demo: build examples/demo with kiln into a private store and run it with
# `kiln run`; then, as an optional second step, export it as an OCI image
# layout and run that with runc or crun (rootless when you are not root).
set -euo pipefail
kiln=$(realpath "$1")
out=$2
[ -x /bin/busybox ] || { echo "demo: /bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }

# A previous run's store holds files owned by your subordinate ids: remove
# them from inside kiln's user namespace, where they are yours.
rm -rf "$out" 2>/dev/null || "$kiln" unshare rm -rf "$out"
mkdir -p "$out/context"
cp examples/demo/Dockerfile "$out/context/"
cp /bin/busybox "$out/context/busybox"

export KILN_ROOT="$out/store"
"$kiln" build -t kiln-demo "$out/context"
echo
echo "Running the image with kiln run:"
"$kiln" run --rm kiln-demo
echo

# Interop: the same image as an OCI layout, read by skopeo and umoci and run by
# an OCI runtime. Optional: say what would enable it when a tool is missing.
missing=()
for tool in skopeo umoci; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if command -v runc >/dev/null; then runtime=runc; elif command -v crun >/dev/null; then runtime=crun; else missing+=(runc); fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: skipping the interop step (export, run with runc or crun): apt-get install ${missing[*]}"
    exit 0
fi
"$kiln" export-layout "$out/layout" kiln-demo
skopeo inspect "oci:$out/layout:kiln-demo:latest" | head -n 20
echo

umoci unpack --rootless --image "$out/layout:kiln-demo:latest" "$out/bundle" >/dev/null
# The demo runs without a terminal. umoci's rootless bundle maps only your own
# id, so the image's USER (uid 1000) is run as that id (root of the bundle).
sed -i -e 's/"terminal": *true/"terminal": false/' \
       -e 's/"uid": *[0-9]*/"uid": 0/' -e 's/"gid": *[0-9]*/"gid": 0/' "$out/bundle/config.json"
# runc copes with hybrid cgroup hierarchies that crun 1.8 refuses.
echo "Running the exported layout with $runtime:"
if ! "$runtime" --root "$out/$runtime" run --bundle "$out/bundle" "kiln-demo-$$"; then
    echo "demo: $runtime could not run the bundle (on hybrid cgroup hosts crun refuses; apt-get install runc)" >&2
    exit 1
fi
