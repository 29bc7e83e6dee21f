#!/usr/bin/env python3
"""report.py [--markdown] RESULTS REPS REPS_CHEAP SECONDS COMMAND [MACHINE MDFILE]

Turns bench.sh's raw results into the table: medians of wall time, the
highest peak RSS over the runs, kiln/buildah ratios against issue 11's
targets, blob sizes and compression throughput. With --markdown, writes the
same between the bench markers of MDFILE (appending them if missing).
"""

import statistics
import sys
from collections import defaultdict

BEGIN = "<!-- bench:begin (written by bench/bench.sh; edits here are overwritten) -->"
END = "<!-- bench:end -->"

# (case, variant): (label, target ratio kiln/buildah or None, absolute kiln limit s or None)
ROWS = [
    (("cached11", "build"), "11-step Dockerfile, fully cached rebuild", 1.0, 0.050),
    (("cold11", "build"), "11-step Dockerfile, cold build", 1.0, None),
    (("changed11", "build"), "11-step Dockerfile, one context file changed", 1.0, None),
    (("runtrue10", "build"), "ten cold `RUN true`", 1.0, None),
    (("files30k", "build"), "one RUN writing 30,000 small files", 1.0, None),
    (("rand512", "build"), "RUN writing 512 MiB random: build", 0.5, None),
    (("rand512", "export"), "512 MiB random: build + export (OCI layout, gzip)", 0.5, None),
    (("rand512", "none"), "512 MiB random: build, kiln `--compression none`", None, None),
    (("text256", "build"), "RUN writing 256 MiB base64 text: build", 1.0, None),
    (("text256", "export"), "256 MiB base64: build + export (OCI layout, gzip)", 0.5, None),
    (("text256", "none"), "256 MiB base64: build, kiln `--compression none`", None, None),
    (("ctx200", "build"), "COPY of a 200 MiB / 20,000-file context, one file changed", 1.0, None),
    (("cmulti", "build"), "multi-stage C build (gcc stage), one source file touched", 0.5, None),
    (("copyfrom", "build"), "`COPY --from` one 300 kB file out of a ~300 MB stage: whole build", 1.0, None),
    (("apt", "build"), "cold apt-based build (`apt-get update && apt-get install hello` FROM debootstrapped Debian)", 1.0, None),
]
RSS_LIMIT_KIB = 100 * 1024


def fmt_t(s):
    if s is None:
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def fmt_m(kib):
    return "-" if kib is None else f"{kib / 1024:.0f}"


def mib(b):
    return f"{b / 1048576:.1f} MiB"


def main():
    args = sys.argv[1:]
    markdown = args[0] == "--markdown"
    if markdown:
        args = args[1:]
    results, reps, reps_cheap, seconds, command = args[:5]
    runs = defaultdict(list)   # (case, variant, tool) -> [(wall, tree, own)]
    notes = defaultdict(list)  # (case, metric, tool) -> [value]
    for line in open(results):
        f = line.split()
        if not f:
            continue
        if f[0] == "note":
            notes[(f[1], f[2], f[3])].append(" ".join(f[4:]))
        else:
            runs[(f[0], f[1], f[2])].append((float(f[3]), int(f[4]), int(f[5])))

    def med(case, variant, tool):
        r = runs.get((case, variant, tool))
        return statistics.median(x[0] for x in r) if r else None

    def peak(case, variant, tool, i):
        r = runs.get((case, variant, tool))
        return max(x[i] for x in r) if r else None

    def num(case, metric, tool="-"):
        v = notes.get((case, metric, tool))
        return statistics.median(float(x) for x in v) if v else None

    head = ["case", "kiln", "buildah", "kiln/buildah", "kiln RSS own (tree) MiB",
            "buildah RSS own (tree) MiB", "target", "met"]
    rows, misses = [], []
    for (case, variant), label, ratio_target, abs_limit in ROWS:
        k, b = med(case, variant, "kiln"), med(case, variant, "buildah")
        if variant == "none":
            b = med(case, "build", "buildah")  # buildah keeps layers uncompressed anyway
        if k is None and b is None:
            continue
        ratio = k / b if k is not None and b else None
        target, ok = [], True
        if ratio_target is not None:
            target.append(f"< {ratio_target:g}×" if ratio_target == 1 else f"≤ {ratio_target:g}×")
            ok &= ratio is not None and (ratio < 1 if ratio_target == 1 else ratio <= ratio_target)
        if abs_limit is not None:
            target.append(f"< {abs_limit * 1000:.0f} ms")
            ok &= k is not None and k < abs_limit
        kown = peak(case, variant, "kiln", 2)
        if kown is not None:
            target.append("RSS < 100")
            ok &= kown < RSS_LIMIT_KIB
        met = ("yes" if ok else "NO") if target else ""
        if target and not ok:
            misses.append(label)
        rows.append([label, fmt_t(k), fmt_t(b) + (" (build)" if variant == "none" else ""),
                     "-" if ratio is None else f"{ratio:.2f}",
                     f"{fmt_m(kown)} ({fmt_m(peak(case, variant, 'kiln', 1))})",
                     f"{fmt_m(peak(case, variant, 'buildah', 2))} ({fmt_m(peak(case, variant, 'buildah', 1))})",
                     ", ".join(target), met])
    step = notes.get(("copyfrom", "step", "kiln"))
    if step:
        vals = [float(x) for x in step if x]
        if vals:
            s = statistics.median(vals)
            ok = s < 0.1
            if not ok:
                misses.append("`COPY --from` step")
            rows.append(["`COPY --from` one 300 kB file out of a ~300 MB stage: kiln's step time",
                         fmt_t(s), "", "", "", "", "< 100 ms", "yes" if ok else "NO"])
    if notes.get(("apt", "skipped", "-")):
        why = notes[("apt", "skipped", "-")][0]
        rows.append(["cold apt-based build", "skipped", "skipped", "", "", "", why, ""])

    extra = []
    for case, what in (("rand512", "512 MiB random"), ("text256", "256 MiB base64 text")):
        size = num(case, "layer_bytes")
        if size is None or med(case, "build", "kiln") is None:
            continue
        kb, bb = num(case, "blob", "kiln"), num(case, "blob", "buildah")
        if kb and bb:
            extra.append(f"{what}: gzip blob kiln {mib(kb)}, buildah {mib(bb)} (kiln/buildah {kb / bb:.3f})")
        rates = []

        def rate(label, t):
            if t is not None and t > 0:
                rates.append(f"{label} {size / t / 1048576:.0f} MiB/s")
            elif t is not None:
                rates.append(f"{label} n/a (difference {t:.2f} s ≤ 0: noise)")
        kn = med(case, "none", "kiln")
        if kn is not None:
            # kiln stores layers plain by default: its build is the `none`
            # build, and the export is where it compresses.
            rate("kiln compress + export", med(case, "export", "kiln") - kn)
        bbuild, bexp = med(case, "build", "buildah"), med(case, "export", "buildah")
        if bbuild is not None and bexp is not None:
            rate("buildah compress at push", bexp - bbuild)
        if rates:
            extra.append(f"{what} ({mib(size)} uncompressed), compression throughput: " + "; ".join(rates))
    sb = num("gcc", "stage_bytes")
    if sb:
        extra.append(f"cmulti, copyfrom: the gcc stage holds {mib(sb)}")
    cb = num("ctx200", "context_bytes")
    if cb:
        extra.append(f"ctx200: the context holds {mib(cb)} in 20,000 files")
    secs = {c: int(v[0]) for (c, m, _), v in notes.items() if m == "seconds"}
    extra.append(f"run time: {int(seconds) // 60} min {int(seconds) % 60} s in all ("
                 + ", ".join(f"{c} {s} s" for c, s in secs.items()) + ")")
    if misses:
        extra.append("targets missed: " + "; ".join(misses))

    if not markdown:
        widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
        out = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head] + rows]
        print("\n".join(out + [""] + extra))
        return
    machine, mdfile = args[5], args[6]
    section = [BEGIN, "", "### Latest run", "", f"Command: `{command}` (medians of {reps} runs, "
               f"{reps_cheap} for the cheap cases; RSS: the highest over the runs)", "", machine, "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    section += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    section += [""] + [f"- {e}" for e in extra] + ["", END]
    try:
        text = open(mdfile).read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(section) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    open(mdfile, "w").write(text)


if __name__ == "__main__":
    main()
