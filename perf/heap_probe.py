"""Look inside a running operator's heap: where its RSS goes once its caches are full.

``probe(pid)`` attaches gdb to the process for a moment (it must be allowed to ptrace it) and:

1. calls glibc's ``malloc_trim(0)``: RSS before minus after is free memory the C allocator held
   (fragmentation of the heap that strings and containers over 512 bytes live in);
2. runs a few lines of Python inside the process (``PyRun_SimpleString`` under the GIL) that write
   a JSON report: glibc's ``mallinfo2`` (bytes in use and free), pymalloc's arenas
   (``sys._debugmallocstats``: bytes in arenas vs in allocated blocks), and, for every attribute of
   every live object of the operator's own classes (``controller.*``), the deep size of what it
   holds (each object counted once, for the first attribute that reaches it): the state that
   grows with the number of Tasks, caches included.

Diagnostics for benchmarks only; the operator has no hook for this and needs none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

_INSIDE = r'''
import ctypes, gc, json, os, sys, tempfile
out_path = {out!r}
class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = _MallInfo2
mi = libc.mallinfo2()
report = {{"glibc": {{"heap": mi.arena, "in_use": mi.uordblks, "free": mi.fordblks, "mmapped": mi.hblkhd}}}}
with tempfile.TemporaryFile("w+") as stats:
    saved = os.dup(2)
    os.dup2(stats.fileno(), 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    stats.seek(0)
    for line in stats:
        if line.startswith("# bytes in allocated blocks"):
            report.setdefault("pymalloc", {{}})["in_blocks"] = int(line.split("=")[1].replace(",", ""))
        elif line.startswith("# arenas allocated current"):
            report.setdefault("pymalloc", {{}})["arenas"] = int(line.split("=")[1].replace(",", ""))
        elif line.startswith("# bytes in available blocks"):
            report.setdefault("pymalloc", {{}})["available"] = int(line.split("=")[1].replace(",", ""))
def _module(v):
    mod = getattr(type(v), "__module__", "")
    return mod if isinstance(mod, str) else ""
seen = set()
def deep(value):
    stack, size = [value], 0
    while stack:
        v = stack.pop()
        if id(v) in seen or isinstance(v, type) or callable(v) and not isinstance(v, (dict, list)):
            continue
        mod = _module(v)
        if mod.startswith(("asyncio", "aiohttp", "structlog", "prometheus_client", "logging", "ssl")):
            continue
        seen.add(id(v))
        size += sys.getsizeof(v)
        if isinstance(v, dict):
            stack.extend(v.keys()); stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
        elif mod.startswith("controller") or mod.startswith("collections") or hasattr(v, "__slots__"):
            if hasattr(v, "__dict__"):
                stack.append(v.__dict__)
            for s in getattr(type(v), "__slots__", ()):
                if hasattr(v, s):
                    stack.append(getattr(v, s))
    return size
holders = {{}}
objs = [o for o in gc.get_objects() if _module(o).startswith("controller.") and hasattr(o, "__dict__")
        and not isinstance(o, type)]
for o in objs:
    seen.add(id(o)); seen.add(id(o.__dict__))
for o in objs:
    for name, value in vars(o).items():
        size = deep(value)
        if size:
            key = type(o).__qualname__ + "." + name
            holders[key] = holders.get(key, 0) + size
report["holders"] = sorted(holders.items(), key=lambda kv: -kv[1])[:15]
with open(out_path, "w") as f:
    json.dump(report, f)
'''


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS")


def probe(pid: int) -> dict | None:
    """The report described above, plus RSS before and after ``malloc_trim`` (KiB); ``None``
    without gdb."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "heap.json"
        script = Path(tmp) / "inside.py"
        script.write_text(_INSIDE.format(out=str(out)))
        before = _rss_kib(pid)
        subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        trimmed = _rss_kib(pid)
        run = f'exec(open("{script}").read())'.replace('"', '\\"')
        subprocess.run([gdb, "-p", str(pid), "-batch", "-ex", "call (int)PyGILState_Ensure()",
                        "-ex", f'call (int)PyRun_SimpleString("{run}")', "-ex", "call (void)PyGILState_Release($1)"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        report = json.loads(out.read_text()) if out.exists() else {}
    report["rss_kib"] = {"before_trim": before, "after_trim": trimmed}
    return report


def summary(report: dict, tasks: int) -> str:
    per = tasks / 1000
    mib = 1024 * 1024
    rss = report["rss_kib"]
    lines = [f"malloc_trim(0) returned {(rss['before_trim'] - rss['after_trim']) / 1024:.1f} MiB to the system "
             f"(RSS {rss['before_trim'] / 1024:.1f} -> {rss['after_trim'] / 1024:.1f} MiB)"]
    if "glibc" in report:
        g = report["glibc"]
        lines.append(f"glibc heap {g['heap'] / mib:.1f} MiB: {g['in_use'] / mib:.1f} in use, {g['free'] / mib:.1f} free; "
                     f"mmapped {g['mmapped'] / mib:.1f} MiB")
    if "pymalloc" in report:
        p = report["pymalloc"]
        lines.append(f"pymalloc: {p.get('arenas', 0)} arenas of 1 MiB; {p.get('in_blocks', 0) / mib:.1f} MiB in "
                     f"allocated blocks, {p.get('available', 0) / mib:.1f} MiB in free blocks of used pools")
    lines.append("deep size held by the operator's objects (MiB, and per 1000 Tasks):")
    lines.extend(f"  {name}: {size / mib:.2f} ({size / mib / per:.2f})" for name, size in report.get("holders", []))
    return "\n".join(lines)
