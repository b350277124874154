"""Backends by name: ``get_backend("tflite").convert(...)``. One module per backend.

Installed as ``lkca_edge.converters``. Each backend is a module ``<name>.py`` here that registers
a ``Backend`` subclass; modules named ``_*.py`` are helpers shared by backends.
"""

from lkca_edge.converters.base import (
    PRECISIONS,
    AppInfo,
    Backend,
    ConversionResult,
    Recipe,
    Runner,
    backend_names,
    get_backend,
    register_backend,
    resolve_backend_name,
)

__all__ = ["PRECISIONS", "AppInfo", "Backend", "ConversionResult", "Recipe", "Runner", "backend_names",
           "get_backend", "register_backend", "resolve_backend_name"]
