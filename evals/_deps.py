"""Lazy optional imports that name the extra to install when a dependency is missing."""

from __future__ import annotations

import importlib
from types import ModuleType


def optional_import(module: str, *, package: str, extra: str = "evals") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is needed for this metric: pip install 'obliviate[{extra}]' (or pip install {package})"
        ) from exc
