"""Where a number came from: the machine and the commit, recorded by trainers, benchmarks and bag
evaluations alike (one definition for all of them)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(short: bool = True) -> str:
    """HEAD of the source checkout (short or full hash); "uncommitted" outside one."""
    command = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "uncommitted"


def machine(threads: int | None = None) -> str:
    """One line: OS, CPU model, CPU count, torch version and threads (when torch is imported)."""
    import sys

    line = f"{platform.system()} {cpu_model()}, {os.cpu_count()} CPUs"
    torch = sys.modules.get("torch")
    if torch is not None:
        line += f", torch {torch.__version__} threads {threads if threads is not None else torch.get_num_threads()}"
    return line
