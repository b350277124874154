"""lkca-edge: compact LKCA vision models to phones and edge boards.

``import lkca_edge`` is light: torch and the backends load only when first used.

    lkca_edge.create_model(name, checkpoint=None, pretrained=False, form=None, **overrides)
    lkca_edge.export(model_or_name, backend, precision="fp32", *, checkpoint=None, recipe=None,
                     calibration=None, out)                    -> ExportResult
    lkca_edge.validate(artifact, dataset=None, limit=None)      -> ValidationResult
    lkca_edge.profile(artifact, device="host", threads=None, runs=100) -> ProfileResult
    lkca_edge.bench(models=None, backends=None, precisions=None, *, out=None, ...) -> BenchOutcome

Errors a user can act on are ``lkca_edge.UserError`` (one line, as the CLI prints it).
"""

__version__ = "0.1.0"

_API = ("export", "validate", "per_layer", "profile", "bench")


def create_model(name=None, checkpoint=None, pretrained=False, form=None, **overrides):
    """Build a model in eval mode (see ``lkca_edge.builder.create_model``)."""
    from lkca_edge.builder import create_model as _create

    return _create(name, checkpoint=checkpoint, pretrained=pretrained, form=form, **overrides)


def list_models():
    """Every zoo entry (``ModelSpec``: config, aliases, shipped weights)."""
    from lkca_edge.zoo import list_models as _list

    return _list()


def __getattr__(name):
    if name in _API:
        from lkca_edge import api

        return getattr(api, name)
    if name in ("UserError", "GateFailed", "BackendUnavailable"):
        from lkca_edge import errors

        return getattr(errors, name)
    if name == "Preprocessing":
        from lkca_edge.preprocessing import Preprocessing

        return Preprocessing
    raise AttributeError(f"module 'lkca_edge' has no attribute {name!r}")


__all__ = ["__version__", "create_model", "list_models", "export", "validate", "per_layer",
           "profile", "bench",
           "UserError", "GateFailed", "BackendUnavailable", "Preprocessing"]
