"""Which rank failed: what a surviving rank says when a collective of a multi-process run breaks.

When one rank dies, the others' next collective fails at once (gloo: "Connection closed by
peer") or after the collective timeout (a rank that is stuck), and neither message says which
rank it was. So, with the process group up:

- :func:`register` (at start-up) records every rank's host name and pid;
- :func:`note` (a rank leaving with an error) leaves ``"ExceptionType: message"`` in the
  process group's key-value store, best effort;
- :func:`describe` (a survivor whose collective failed) reads those notes and checks which ranks
  on its own host are no longer running, and writes one message naming them.

Used by :mod:`tokengym.agents.distributed`, whose collectives raise :class:`RankFailure`.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path

import torch.distributed as dist

_KEY = "tokengym/failed/{rank}"
_peers: list[tuple[str, int]] = []  # (host, pid) of every rank, in rank order
_timeout_s = [0.0]
_SETTLE_S = 3.0  # seconds a survivor waits for a failed rank to show as ended


class RankFailure(RuntimeError):
    """A collective failed because another rank died or stopped answering; the message names
    the rank(s) and what is known of why."""


def register(timeout_s: float) -> None:
    """Exchange every rank's (host, pid); call once, right after the process group starts."""
    peers: list[tuple[str, int] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    _peers[:] = [p for p in peers if p is not None]
    _timeout_s[0] = float(timeout_s)


def _store() -> dist.Store | None:
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=5))
        return store
    except Exception:  # no group, or a private API that moved: the message says less
        return None


def note(exc: BaseException) -> None:
    """Tell the other ranks why this one stops (best effort; never raises)."""
    text = str(exc.code) if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
    try:
        store = _store()
        if store is not None:
            store.set(_KEY.format(rank=dist.get_rank()), text[:1000])
    except Exception:  # the store may be gone with the rank that hosted it
        pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) still runs; a zombie does not."""
    if Path("/proc/self/stat").exists():  # Linux: a zombie is dead too
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _notes(ranks: list[int]) -> dict[int, str]:
    store, out = _store(), {}
    if store is None:
        return out
    for r in ranks:
        key = _KEY.format(rank=r)
        try:
            if store.check([key]):
                out[r] = store.get(key).decode(errors="replace")
        except Exception:  # the store's host (rank 0, or torchrun's agent) is gone
            break
    return out


def describe(operation: str, exc: BaseException) -> str:
    """The message of a rank whose collective ``operation`` failed with ``exc``."""
    me = dist.get_rank() if dist.is_initialized() else 0
    others = [r for r in range(len(_peers)) if r != me]
    host = socket.gethostname()
    # A killed rank's connections close while the kernel is still tearing it down: give it a
    # moment to show as ended (or a failing rank's note to arrive) before saying nobody did.
    deadline = time.monotonic() + _SETTLE_S
    while True:
        notes = _notes(others)
        dead = [r for r in others if _peers[r][0] == host and not _alive(_peers[r][1])]
        if notes or dead or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    remote = [r for r in others if _peers[r][0] != host]
    parts = [f"rank {r} failed: {notes[r]}" for r in sorted(notes)]
    parts += [f"rank {r} (pid {_peers[r][1]} on {host}) is no longer running (killed, or it "
              "crashed without a Python error: out of memory?)" for r in dead if r not in notes]
    if not parts:
        timed_out = "timed out" in str(exc).lower()
        running = [r for r in others if r not in remote]
        if timed_out and running:
            parts.append(f"rank(s) {running} did not answer within the collective timeout "
                         f"({_timeout_s[0]:g} s, --dist-timeout) although still running: one is "
                         "stuck or much slower than this one")
        if remote:
            parts.append(f"rank(s) {remote} on other hosts could not be checked "
                         f"({', '.join(f'{r}: {_peers[r][0]}' for r in remote)}); their logs, or "
                         "torchrun's summary, say which one stopped")
        if not parts:
            parts.append("the other ranks are still running; this rank's connection to them broke")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"rank {me}: a collective ({operation}) of the multi-process run failed: "
            + "; ".join(parts) + ". This rank stops too; the checkpoints already written are "
            f"intact (resume with --resume). [torch.distributed: {first[:300]}]")
