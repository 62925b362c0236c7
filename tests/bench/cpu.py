"""CPU time of process trees on this machine, read from /proc (Linux).

The bench's sides share this machine's cores with PostgreSQL, so a rate alone does not say which
tier spent them: sampled before and after a run, these say what one request cost PostgreSQL and
what it cost the server that answered it. A tier's CPU per request also bounds its rate: at 40 ms
of PostgreSQL CPU per batch, two cores allow at most 50 batches a second, whatever the client does.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """Every process this machine lets us read: pid -> (parent pid, CPU seconds): its own user and
    system time, and that of its children that ended and that it waited for."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended since the listing
            continue
        # The command name (field 2) may hold spaces and parentheses: the fields follow its last ")".
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), sum(int(ticks) for ticks in fields[11:15]) / _TICKS_PER_SECOND)
    return found


def tree_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds spent so far by each named process and its descendants, those that ended
    included once their parent has waited for them (PostgreSQL's backends of closed connections,
    a server's respawned workers)."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in processes:
                total += processes[pid][1]
                todo.extend(children.get(pid, ()))
        totals[name] = total
    return totals


def ms_per_call(before: dict[str, float], after: dict[str, float], calls: float) -> dict[str, float]:
    """Each tree's CPU milliseconds per call between two samples (none when there were no calls)."""
    if calls <= 0:
        return {}
    return {name: round((after[name] - before[name]) * 1000 / calls, 3) for name in after}


def postgres_server(backend_pid: int) -> int | None:
    """The PostgreSQL server process (the postmaster) one of whose backends is ``backend_pid``,
    as pg_backend_pid() names it; None when that server does not run on this machine."""

    def command(pid: int) -> str:
        try:
            return (Path("/proc") / str(pid) / "comm").read_text().strip()
        except OSError:
            return ""

    try:
        stat = (Path("/proc") / str(backend_pid) / "stat").read_text()
    except OSError:
        return None
    parent = int(stat[stat.rindex(")") + 2 :].split()[1])
    # A remote server's backend pid may name some other process here: both must be postgres.
    if command(backend_pid) != "postgres" or command(parent) != "postgres":
        return None
    return parent
