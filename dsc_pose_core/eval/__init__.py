"""Evaluation: pose error functions (``metrics``), the BOP19 protocol (``bop``), the CLI (``cli``)."""

from .bop import EvalData, evaluate, evaluate_files, load_eval_data
from .metrics import (
    add,
    add_or_add_s,
    add_s,
    mspd,
    mssd,
    n_deg_n_cm,
    proj2d,
    rotation_error_deg,
    translation_error,
)

__all__ = [
    "EvalData",
    "evaluate",
    "evaluate_files",
    "load_eval_data",
    "add",
    "add_s",
    "add_or_add_s",
    "proj2d",
    "rotation_error_deg",
    "translation_error",
    "n_deg_n_cm",
    "mssd",
    "mspd",
]
