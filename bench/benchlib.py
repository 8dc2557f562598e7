"""What every benchmark records: the machine, the commit, and its own marked section of
docs/BENCHMARKS.md (replaced on each run, other sections kept)."""

from __future__ import annotations

from pathlib import Path

from dsc_pose_core.provenance import cpu_model, git_commit  # noqa: F401 (the benches import them from here)

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"


def write_section(section: str, start: str, end: str, path: Path = BENCHMARKS_MD) -> None:
    """``section`` starts with ``start`` and ends with ``end``; it replaces the old one or is appended."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
