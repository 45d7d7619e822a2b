"""``tokengym bench --jobs 2`` stopped by a SIGINT sent to its main process alone (``kill -INT``,
what a job scheduler or a script does; a terminal's Ctrl-C takes the same path): every process
stops where a one-process run would and the command exits, instead of waiting forever for
processes that never heard of the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def job_processes(pid: int) -> list[int]:
    """The ``--jobs`` processes among ``pid``'s children (not multiprocessing's tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.append(int(child))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_kill_int_to_the_main_process_stops_every_job_process(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokengym", "bench", "--suite", "smoke", "--tasks", "Sentiment",
         "--agents", "ppo", "--seeds", "2", "--iterations", "1000", "--jobs", "2",
         "--out", str(out)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # nothing but our kill reaches it
    try:
        metrics = [out / f"runs/Sentiment/ppo/seed{k}/metrics.jsonl" for k in (0, 1)]
        end = time.monotonic() + 240
        while not all(m.is_file() and m.read_text().count("\n") >= 1 for m in metrics):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < end, "the two runs did not start"
            time.sleep(0.5)
        children = job_processes(proc.pid)
        assert len(children) == 2
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted" in output and "rerun the same command to resume" in output
    end = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < end:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in children)
    for k in (0, 1):  # each stopped after an iteration, with a checkpoint to resume from
        assert (out / f"runs/Sentiment/ppo/seed{k}/checkpoints/LATEST").is_file()
        assert not (out / f"runs/Sentiment/ppo/seed{k}/eval.json").exists()
