"""CPU time the hypervisor took from this (virtual) machine while a benchmark ran: "steal", from /proc/stat.

The load average counts runnable processes inside the machine only. On a shared VM the host can also
deschedule the virtual CPUs themselves (measured in round 2, session 7: 21-36 % steal on an otherwise quiet
2-core VM, while the load average read 1.4); wall-clock latencies then grow with no sign in the load average.
Benchmarks record both. The kernel exposes steal as the 8th field of the ``cpu`` line of /proc/stat (in
USER_HZ ticks, summed over CPUs; ``man 5 proc``); no library reads it for us without adding a dependency
(psutil's ``cpu_times().steal`` is the same field), so it is read here.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

PROC_STAT = Path("/proc/stat")
#: Above this median 1-minute load average over a single-threaded benchmark's rounds (its own thread is ~1),
#: other work took more than half a core: the wall-clock figures are marked not final.
LOAD_LIMIT = 1.5
#: Above this share of stolen CPU time the wall-clock figures of a run are marked not final.
STEAL_LIMIT_PCT = 10.0


def cpu_ticks(text: str | None = None) -> tuple[int, int] | None:
    """(steal ticks, total ticks) of the aggregate ``cpu`` line of /proc/stat (or of ``text``); None where
    the file is missing (not Linux) or holds no steal field (kernels before 2.6.11)."""
    if text is None:
        try:
            text = PROC_STAT.read_text()
        except OSError:
            return None
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            if len(values) < 8:
                return None
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
            # counted in user / nice, so the total stops at steal.
            return values[7], sum(values[:8])
    return None


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Stolen share (%) of all CPU time between two :func:`cpu_ticks` readings; None when either is None or
    no tick passed."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def machine_busy(round_loads: list[float], steal: float | None) -> bool:
    """Whether a single-threaded benchmark's timing was disturbed: the median load average over its rounds
    above :data:`LOAD_LIMIT`, or more than :data:`STEAL_LIMIT_PCT` of the CPU time stolen (``None``: unknown,
    not counted)."""
    return float(median(round_loads)) > LOAD_LIMIT or (steal is not None and steal > STEAL_LIMIT_PCT)
