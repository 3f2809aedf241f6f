"""Pieces the side-by-side benchmark scripts share: what CPU ran them, and how a report
replaces its own section of BENCHMARKS.md (`<!-- bench:NAME -->` … `<!-- /bench:NAME -->`)."""

import os
import platform
import re


def cpu():
    """The CPU's model name from /proc/cpuinfo (else what `platform` says)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def flags():
    """The instruction sets the kernels choose between, as /proc/cpuinfo names them."""
    try:
        f = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        return " ".join(x for x in ["avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512_vnni"] if x in f)
    except (OSError, StopIteration):
        return "?"


def write_section(out, section, report):
    """`report` (its title demoted to a second-level heading) between the section's markers
    in `out`, replacing what was there, or appended at the end; the rest of `out` kept."""
    body = re.sub(r"^#", "##", report, count=1)
    begin, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{begin}\n{body}{end}\n"
    old = open(out).read() if os.path.exists(out) else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    open(out, "w").write(new)
