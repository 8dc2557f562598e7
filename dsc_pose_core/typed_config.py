"""Typed configuration: YAML -> dataclasses, strictly (unknown keys and wrong types are errors).

The trainers' configs are parsed here, and loaders rebuild a network from the config its checkpoint
recorded (``from_dict``) without importing any trainer.

A config file has a ``stage:`` key naming the trainer and one section per stage::

    stage: segmentation        # which trainer runs (see STAGES in training/stages.py)
    out: out/lmo_seg           # output folder (checkpoints, pseudo labels, results)
    seed: 0
    segmentation: {...}        # SegmentationConfig (training/segmentation.py)

Overrides ``a.b.c=value`` (value parsed as YAML) are applied to the raw mapping before validation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The training configuration is malformed."""


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value, tp, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for arg in args:
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if _is_dataclass_type(tp):
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else typing.Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is typing.Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls, data, where: str = "config"):
    """Build dataclass ``cls`` from a mapping; unknown keys, missing required keys and wrong types
    raise :class:`ConfigError` naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {f.name!r}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj) -> dict:
    """Dataclass -> plain dict of primitives/lists (for YAML/JSON/checkpoints)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(obj)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``a.b=value`` -> raw["a"]["b"] = yaml.safe_load(value)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for key, value in child.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A training YAML with its ``base:`` chain resolved: ``base: cpu_small.yaml`` (a path relative to
    this file, or a list of them, applied in order) supplies defaults that this file overrides."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: base configs form a cycle: {' -> '.join(str(p) for p in _seen + (path,))}")
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    bases = raw.pop("base", None)
    if bases is None:
        return raw
    resolved: dict = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a file name or a list of them, got {base!r}")
        resolved = merge(resolved, load_yaml(path.parent / base, _seen + (path.resolve(),)))
    return merge(resolved, raw)
