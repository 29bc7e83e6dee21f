#!/usr/bin/env python3
"""measure.py OWN -- CMD...: run CMD, print "WALL TREE_KIB OWN_KIB" on stdout.

WALL is the wall time in seconds. Memory is sampled every 10 ms from /proc
over CMD's whole process tree (children found through
/proc/PID/task/TID/children, so processes in kiln's or buildah's user and
pid namespaces are seen with their host pids):

- TREE_KIB: the highest sum of VmRSS over every process of the tree seen at
  one sample (what the build costs the machine, RUN's programs included;
  pages shared between processes count once per process, so this errs high);
- OWN_KIB: the same sum over the tool's own processes only (those whose
  command name starts with OWN, e.g. "kiln" or "buildah"), raised to the
  largest kernel-kept high-water mark (VmHWM) of any one of them, which
  catches a peak between two samples.

/usr/bin/time's %M is the peak of the single biggest process only, which
misses kiln's parent + namespaced child and counts gcc as "kiln"; hence this.
CMD's own stdout and stderr go to our stderr; its exit status is ours. A run shorter
than one sample reports /usr/bin/time's %M of CMD instead.
"""

import os
import select
import subprocess
import sys
import tempfile
import time


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def status(pid):
    """(name, rss_kib, hwm_kib) of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    name, rss, hwm = "", 0, 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return name, rss, hwm


def main():
    own = sys.argv[1]
    assert sys.argv[2] == "--"
    cmd = sys.argv[3:]
    start = time.monotonic()
    # /usr/bin/time (tiny, so its pre-exec size does not count) gives the
    # fallback peak for runs too short to sample.
    fd, hwm_file = tempfile.mkstemp(prefix="measure-")
    os.close(fd)
    proc = subprocess.Popen(["/usr/bin/time", "-q", "-f", "%M", "-o", hwm_file, "--"] + cmd, stdout=sys.stderr)
    # Between samples we wait on a pidfd, so the wall time ends when CMD
    # does, not at the next 10 ms tick (that rounding was a fifth of a
    # 50 ms run).
    try:
        exited = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        exited = None
    tree_peak = own_peak = 0
    usage = None
    while True:
        pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        todo, tree, mine = [proc.pid], 0, 0
        seen = set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            st = status(pid)
            if st is None:
                continue
            name, rss, hwm = st
            tree += rss
            if name.startswith(own):
                mine += rss
                own_peak = max(own_peak, hwm)
            todo.extend(children(pid))
        tree_peak = max(tree_peak, tree)
        own_peak = max(own_peak, mine)
        if exited is None:
            time.sleep(0.01)
        else:
            select.select([exited], [], [], 0.01)
    wall = time.monotonic() - start
    if exited is not None:
        os.close(exited)
    # A run shorter than one sample: fall back to the kernel's peak of the
    # biggest process CMD waited for (CMD execs the tool, so that is the tool).
    with open(hwm_file) as f:
        lines = f.read().split()
    os.unlink(hwm_file)
    if own_peak == 0 and lines:
        own_peak = int(lines[-1])
    tree_peak = max(tree_peak, own_peak)
    print(f"{wall:.3f} {tree_peak} {own_peak}")
    sys.exit(os.waitstatus_to_exitcode(wstatus))


if __name__ == "__main__":
    main()
