#!/usr/bin/env bash
# make demo: build examples/demo with kiln into a private store, export it as
# an OCI image layout, check it with skopeo, then run it with crun (rootless
# when you are not root).
set -euo pipefail
kiln=$(realpath "$1")
out=$2
need() { command -v "$1" >/dev/null || { echo "demo: $1 is missing: apt-get install $2" >&2; exit 1; }; }
need umoci umoci
need skopeo skopeo
[ -x /bin/busybox ] || { echo "demo: /bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/context"
cp examples/demo/Dockerfile "$out/context/"
cp /bin/busybox "$out/context/busybox"

export KILN_ROOT="$out/store"
"$kiln" build -t kiln-demo "$out/context" -o "type=oci,dest=$out/layout"
echo
skopeo inspect "oci:$out/layout:kiln-demo:latest" | head -n 20
echo

umoci unpack --rootless --image "$out/layout:kiln-demo:latest" "$out/bundle" >/dev/null
# The demo runs without a terminal. umoci's rootless bundle maps only your own
# id, so the image's USER (uid 1000) is run as that id (root of the bundle).
sed -i -e 's/"terminal": *true/"terminal": false/' \
       -e 's/"uid": *[0-9]*/"uid": 0/' -e 's/"gid": *[0-9]*/"gid": 0/' "$out/bundle/config.json"
# runc copes with hybrid cgroup hierarchies that crun 1.8 refuses; either will do.
if command -v runc >/dev/null; then runtime=runc; elif command -v crun >/dev/null; then runtime=crun; else
    echo "demo: no OCI runtime: apt-get install runc (or crun)" >&2; exit 1; fi
echo "Running the image with $runtime:"
"$runtime" --root "$out/$runtime" run --bundle "$out/bundle" "kiln-demo-$$"
