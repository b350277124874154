"""Installed versions of the tools an artifact or a run depends on (no heavy imports)."""

from __future__ import annotations

import platform
from importlib import metadata

# Every manifest and run records these; each backend adds its own ``tool_packages``.
CORE_PACKAGES = ("lkca-edge", "numpy", "torch")


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (``lkca-edge``'s own from the source if need be)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        if distribution == "lkca-edge":
            from lkca_edge import __version__

            return __version__
        return None


def tool_versions(packages=CORE_PACKAGES, python: bool = False) -> dict[str, str | None]:
    """{distribution: version or None}, in the order given, repeats dropped."""
    out = {pkg: package_version(pkg) for pkg in dict.fromkeys(packages)}
    if python:
        out["python"] = platform.python_version()
    return out
