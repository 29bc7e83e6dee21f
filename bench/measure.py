#!/usr/bin/env python3
"""measure.py OWN [--user NAME] [--env K=V]... (--shell CMDLINE | -- CMD...):
run CMD, print "WALL TREE_KIB OWN_KIB" on stdout.

--user runs CMD as that user (its group and supplementary groups), --env
gives CMD exactly these variables; --shell takes a shell command line, run
straight (split as the shell would) when it has no shell syntax, else with
bash -c. Each wrapper a command starts through (setpriv, env, bash,
/usr/bin/time) costs a millisecond or two of exec and dynamic loading,
which is noise next to a long build but a third of a fully cached one, and
not the tool's time.

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
CMD's own stdout and stderr go to our stderr; its exit status is ours. The
first sample is taken as soon as CMD has started. A run too short for it
reports wait4's ru_maxrss of CMD instead, which errs high: it counts the
pages of this Python process that CMD's fork shared before its exec.
"""

import argparse
import os
import pwd
import select
import shlex
import subprocess
import sys
import time

# Characters that make a command line need a shell.
SHELL_SYNTAX = set("|&;<>()$`*?[]{}~\n")


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


def arguments():
    p = argparse.ArgumentParser(description="run a command, print its wall time and peak RSS")
    p.add_argument("own", help="command-name prefix of the tool's own processes")
    p.add_argument("--user", help="run as this user")
    p.add_argument("--env", action="append", help="K=V: the command's whole environment")
    p.add_argument("--shell", help="a shell command line")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, cmd = p.parse_args(argv[:cut]), argv[cut + 1 :]
    if args.shell is not None:
        direct = not (set(args.shell) & SHELL_SYNTAX)
        cmd = shlex.split(args.shell) if direct else ["bash", "-c", args.shell]
    if not cmd:
        p.error("no command")
    kw = {}
    if args.user:
        pw = pwd.getpwnam(args.user)
        kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(args.user, pw.pw_gid))
    if args.env is not None:
        kw["env"] = dict(e.split("=", 1) for e in args.env)
    return args.own, cmd, kw


def main():
    own, cmd, kw = arguments()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=sys.stderr, **kw)
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
    # A run too short for one sample: the kernel's peak of CMD (see above).
    if own_peak == 0 and usage is not None:
        own_peak = usage.ru_maxrss
    tree_peak = max(tree_peak, own_peak)
    print(f"{wall:.3f} {tree_peak} {own_peak}")
    sys.exit(os.waitstatus_to_exitcode(wstatus))


if __name__ == "__main__":
    main()
