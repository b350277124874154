"""Matching a data set's labels to a model's, by name (numpy only).

A model's label names travel with it (checkpoint, manifest). A data set with the same names in
another order is remapped by name; one whose names are a subset of the model's is remapped too
(validating a 10-class model on 3 of its classes); numeric names match by value ("7" and "07");
anything else is refused with both lists. A model that carries no names (a plain state dict, the
paper's format) is matched by position, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lkca_edge.errors import UserError, printable

MAX_LISTED = 12


@dataclass(frozen=True)
class LabelMatch:
    """How data labels map onto the model's classes: ``remap[data_index] = model_index``."""

    remap: np.ndarray | None   # None: the identity
    note: str                  # what was done, for the user ("" when the lists are equal)

    def apply(self, y: np.ndarray) -> np.ndarray:
        return y if self.remap is None else self.remap[y]


def _listed(labels) -> str:
    names = [printable(str(x), 40) for x in labels]
    more = f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _numeric(labels) -> list[int] | None:
    try:
        values = [int(str(x).strip()) for x in labels]
    except ValueError:
        return None
    return values if len(set(values)) == len(values) else None


def match_labels(model_labels, data_labels, num_classes: int, data_name: str = "the data",
                 model_name: str = "the model") -> LabelMatch:
    """Map ``data_labels`` (in the data set's index order) onto the model's class indices."""
    model_labels = [str(x) for x in (model_labels or ())]
    data_labels = [str(x) for x in data_labels]
    if len(set(data_labels)) != len(data_labels):
        raise UserError(f"{data_name} names a label twice ({_listed(data_labels)})")
    if not model_labels:
        if len(data_labels) > num_classes:
            raise UserError(f"{data_name} has {len(data_labels)} classes, {model_name} has "
                            f"{num_classes} (and records no label names to match)")
        return LabelMatch(None, f"{model_name} records no label names: {data_name}'s labels "
                                f"({_listed(data_labels)}) are taken by position")
    if data_labels == model_labels:
        return LabelMatch(None, "")
    position = {name: i for i, name in enumerate(model_labels)}
    how = "by name"
    if not set(data_labels) <= set(position):
        m_num, d_num = _numeric(model_labels), _numeric(data_labels)
        if m_num is not None and d_num is not None and set(d_num) <= set(m_num):
            position = {name: m_num.index(v) for name, v in zip(data_labels, d_num)}
            how = "numerically"
        else:
            unknown = [x for x in data_labels if x not in position]
            raise UserError(f"{data_name}'s labels do not match {model_name}'s: it has "
                            f"{_listed(data_labels)}; {model_name} knows {_listed(model_labels)} "
                            f"({_listed(unknown)} unknown). Pass data with the model's labels, "
                            f"or train on this data first")
    remap = np.array([position[name] for name in data_labels], np.int64)
    if np.array_equal(remap, np.arange(len(remap))) and len(remap) == len(model_labels):
        return LabelMatch(None, "")
    subset = len(data_labels) < len(model_labels)
    note = (f"{data_name}'s labels matched to {model_name}'s {how}"
            + (f" ({len(data_labels)} of its {len(model_labels)} classes)" if subset else
               " (same names, another order: remapped)"))
    return LabelMatch(remap, note)
