"""Build metadata for `/version` (F-004, F-027).

Container builds write `aero_relay/_build_info.json` from the BUILD_COMMIT / BUILD_TIME build
args (the original's ldflags). Without it we fall back to the source checkout's git metadata,
like Go's `vcs.revision` / `vcs.time`; either value may be empty.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import attrs

__all__ = ["BuildInfo", "load_build_info"]

_BUILD_FILE = Path(__file__).with_name("_build_info.json")


@attrs.frozen
class BuildInfo:
    commit: str = ""
    build_time: str = ""


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def load_build_info() -> BuildInfo:
    try:
        data = json.loads(_BUILD_FILE.read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        commit = str(data.get("commit") or "")
        build_time = str(data.get("buildTime") or "")
        if commit or build_time:
            return BuildInfo(commit, build_time)
    commit = _git("rev-parse", "HEAD")
    build_time = _git("show", "-s", "--format=%cI", "HEAD") if commit else ""
    return BuildInfo(commit, build_time)
