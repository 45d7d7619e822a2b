"""``manifest.json``: what made a run, so that a number can be traced to its code months later.

Every run directory gets one: the resolved settings (what the run is, how it is run, the agent's
config) with their SHA-256, and per session (first start and every resume) the versions of
tokengym, torch, transformers and gymnasium, the git commit of the tokengym checkout when it is
one (with a ``dirty`` flag, and the loaded source files edited after the process started, when
there are any), Python, the platform, the device and the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tokengym.fileio import atomic_write_json

MANIFEST = "manifest.json"
PACKAGES = ("tokengym", "torch", "transformers", "gymnasium")


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 of ``settings`` as canonical JSON (sorted keys): equal settings, equal hash."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _process_start() -> float:
    """When this process started (Linux: its /proc entry), else when this module was loaded."""
    try:
        return os.stat(f"/proc/{os.getpid()}").st_ctime
    except OSError:
        return _LOADED_AT


_LOADED_AT = time.time()


def changed_since_loaded(root: Path) -> list[str]:
    """tokengym's source files this process has loaded that changed on disk after it started
    (paths relative to ``root``): the running code is then not the checkout's commit."""
    start, out = _process_start(), []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not module.__name__.startswith("tokengym"):
            continue
        try:
            if Path(path).stat().st_mtime > start:
                out.append(str(Path(path).resolve().relative_to(root)))
        except (OSError, ValueError):
            continue
    return sorted(out)


def source_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout tokengym runs from, or None (installed); plus
    ``"changed_since_loaded"`` when source files this process runs were edited after it
    started (a long job in a checkout that moved on: the commit is the checkout's, not the
    code's)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    commit = _git(["rev-parse", "HEAD"], root)
    if not commit:
        return None
    out: dict[str, Any] = {"commit": commit, "dirty": bool(
        _git(["status", "--porcelain", "--untracked-files=no"], root))}
    changed = changed_since_loaded(root)
    if changed:
        out["changed_since_loaded"] = changed
    return out


def session(device: str) -> dict[str, Any]:
    """This process: versions, commit, Python, platform, device, command line, time."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions,
        "git": source_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "argv": list(sys.argv),
        "pid": os.getpid(),
    }


def write_manifest(out: str | os.PathLike[str], settings: dict[str, Any], device: str,
                   world_size: int = 1) -> Path:
    """Add this session to ``out/manifest.json`` (created on the first start) with ``settings``
    (the resolved identity, run settings and agent config) and their hash; a session of several
    processes (written by rank 0) records their number as ``world_size``."""
    path = Path(out) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = {}  # a damaged manifest is rebuilt: it documents, nothing reads it back
    sessions = data.get("sessions", []) if isinstance(data.get("sessions"), list) else []
    record = {**session(device), "settings_sha256": settings_hash(settings)}
    if world_size > 1:
        record["world_size"] = world_size
    return atomic_write_json(path, {"settings": settings, "settings_sha256": settings_hash(settings),
                                    "sessions": [*sessions, record]})
