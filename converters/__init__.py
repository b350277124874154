"""Backends by name: ``get_backend("tflite").convert(...)``. One module per backend."""

from converters.base import (
    PRECISIONS,
    Backend,
    ConversionResult,
    Recipe,
    Runner,
    all_backends,
    backend_for_artifact,
    backend_names,
    get_backend,
    register_backend,
)

__all__ = ["PRECISIONS", "Backend", "ConversionResult", "Recipe", "Runner", "all_backends",
           "backend_for_artifact", "backend_names", "get_backend", "register_backend"]
