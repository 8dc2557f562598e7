"""The training entry point: ``python training/train.py --config config/train/lmo_seg.yaml``.

Thin by design: everything lives in ``dsc_pose_core.training`` (see its ``cli`` module)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsc_pose_core.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
