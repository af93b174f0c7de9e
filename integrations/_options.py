"""The keyword arguments every ``Mesh`` adapter accepts, turned into settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshware._config import MemberSettings

__all__ = ["load_settings"]


def load_settings(
    options: Mapping[str, Any], app_config: Mapping[str, Any] | None = None
) -> MemberSettings:
    """Settings from ``Mesh(...)`` keyword arguments, then ``app_config``, then the environment."""
    return MemberSettings.load(
        {k: v for k, v in options.items() if v is not None}, app_config=app_config
    )
