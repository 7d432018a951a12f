"""Name -> env constructor registry used by configs (``env.id``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from mmrl.config import ConfigError

# name -> "module:attr"; modules import lazily so a missing optional extra only fails for the env that needs it.
_REGISTRY: dict[str, str | Callable[..., gym.Env]] = {}


def register(name: str, entry_point: str | Callable[..., gym.Env]) -> None:
    """Register ``entry_point`` ("package.module:Class" or a callable) under ``name``."""
    _REGISTRY[name] = entry_point


def names() -> list[str]:
    return sorted(_REGISTRY)


def check(name: str) -> None:
    """A one-line :class:`ConfigError` unless ``name`` is an mmrl env or a Gymnasium env id."""
    if name not in _REGISTRY and name not in gym.registry:
        raise ConfigError(f"env.id: unknown env '{name}' (mmrl envs: {', '.join(names())}; or a Gymnasium env id)")


def make(name: str, **kwargs: Any) -> gym.Env:
    """Construct the env registered as ``name`` with ``kwargs``, else Gymnasium's env of that id (``CartPole-v1``, or
    any env a package registered with Gymnasium); unknown names are a one-line error."""
    check(name)
    if name not in _REGISTRY:
        return gym.make(name, **kwargs)
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry(**kwargs)
