"""lkca-edge: compact LKCA vision models to phones and edge boards.

``import lkca_edge`` is light: torch and the backends load only when first used.
"""

__version__ = "0.1.0"


def create_model(name, checkpoint=None, pretrained=False, form=None, **overrides):
    """Build a zoo model in eval mode (see ``lkca_edge.builder.create_model``)."""
    from lkca_edge.builder import create_model as _create

    return _create(name, checkpoint=checkpoint, pretrained=pretrained, form=form, **overrides)


def list_models():
    """Every zoo entry (``ModelSpec``: config, aliases, shipped weights)."""
    from lkca_edge.zoo import list_models as _list

    return _list()


__all__ = ["__version__", "create_model", "list_models"]
