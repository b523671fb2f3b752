"""Per-process resource readings from /proc (Linux): CPU seconds, I/O counters and peak RSS of one process (all
its threads), taken before and after the measured part of a run."""
from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system of every thread of the process
    rchar: int  # bytes read through read-like syscalls (files, page cache included)
    wchar: int
    read_bytes: int  # bytes the block layer read / was asked to write for the process
    write_bytes: int


def sample(pid: int | str = "self") -> Sample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)
    io: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            io = {k: int(v) for k, v in (line.split(":") for line in f)}
    except OSError:  # another user's process: no I/O counters
        pass
    return Sample(cpu, io.get("rchar", 0), io.get("wchar", 0), io.get("read_bytes", 0), io.get("write_bytes", 0))


def delta(a: Sample, b: Sample) -> dict[str, float]:
    return {"cpu_s": round(b.cpu_s - a.cpu_s, 3), "bytes_read": b.rchar - a.rchar, "bytes_written": b.wchar - a.wchar,
            "disk_read_bytes": b.read_bytes - a.read_bytes, "disk_write_bytes": b.write_bytes - a.write_bytes}


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset the process's high-water mark (VmHWM) to its current RSS, so the peak read later is the run's."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
