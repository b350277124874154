"""Mixed precision: keep the layers that add the most error in float until a target is met.

Used by the ``int8-mixed`` recipes (target: ``gates.MIXED_TARGET``, near fp32) and by
``export --fallback`` on an int8 export whose gate failed (target: the int8 gate). The layers are
ranked once, by the per-layer measurement of the all-int8 artifact (``per_layer.PerLayerResult
.sensitivity``: the noise each layer adds to the residual stream); then the artifact is converted
again with the first 1, 2, 3, ... of them in float (the recipe's ``float_layers`` option) and
validated, until the target is met or the budget of float layers is spent; then the best step is
kept (the first that meets the target, else the one that agrees most with fp32, converted once
more if it is not the last). Each step is a real conversion and a real validation; every step is
recorded in the manifest.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from lkca_edge.gates import MIXED_TARGET, Gate, ValidationResult, gate_for, meets
from lkca_edge.pipelines.per_layer import ROUNDING_NOISE

MIXED_BUDGET = 4      # int8-mixed: at most this many layers in float
FALLBACK_BUDGET = 8   # --fallback: at most this many layers in float


@dataclass
class MixedOutcome:
    recipe: object              # the recipe of the artifact now on disk (its float_layers)
    conversion: object          # its ConversionResult (details.mixed_precision: the search)
    validation: ValidationResult
    seconds: float              # conversion time spent on the extra steps


def with_float_layers(recipe, layers):
    """``recipe`` with the option ``float_layers`` set to ``layers``."""
    options = tuple((k, v) for k, v in recipe.options if k != "float_layers")
    return dataclasses.replace(recipe, options=options + (("float_layers", tuple(layers)),))


def _step(layers: list[str], v: ValidationResult, target: Gate) -> dict:
    return {"float_layers": list(layers), "accuracy": v.accuracy,
            "top1_agreement": v.top1_agreement, "max_abs_err": v.max_abs_err,
            "gate_passed": v.passed, "target_met": meets(v, target)}


def keep_sensitive_layers_float(recipe, conversion, validation: ValidationResult, *, convert,
                                validate, measure, fallback: bool) -> MixedOutcome:
    """Search float layers for an int8 artifact already converted with ``recipe`` (``conversion``,
    ``validation``). ``convert(recipe) -> ConversionResult`` re-converts into the same file,
    ``validate() -> ValidationResult`` validates it, ``measure() -> PerLayerResult`` measures its
    layers. ``fallback``: the target is the int8 gate (else ``MIXED_TARGET``)."""
    target = gate_for("int8", getattr(validation, "trained", True)) if fallback else MIXED_TARGET
    budget = FALLBACK_BUDGET if fallback else MIXED_BUDGET
    layers = measure()
    ranking = [s for s in layers.sensitivity if s["added_noise"] > ROUNDING_NOISE]
    steps = [_step([], validation, target)]
    seconds = 0.0
    current = (recipe, conversion, validation)
    floated: list[str] = []
    for entry in ranking[:budget]:
        if steps[-1]["target_met"]:
            break
        floated.append(entry["name"])
        candidate = with_float_layers(recipe, floated)
        t0 = time.perf_counter()
        conv = convert(candidate)
        seconds += time.perf_counter() - t0
        v = validate()
        steps.append(_step(floated, v, target))
        current = (candidate, conv, v)
    best = max(range(len(steps)), key=lambda i: (steps[i]["target_met"], steps[i]["gate_passed"] is True,
                                                  steps[i]["top1_agreement"] or 0.0,
                                                  steps[i]["accuracy"] or 0.0, -i))
    if best != len(steps) - 1:  # the file holds the last step: convert the best one again
        floated = list(steps[best]["float_layers"])
        candidate = with_float_layers(recipe, floated) if floated else recipe
        t0 = time.perf_counter()
        conv = convert(candidate)
        seconds += time.perf_counter() - t0
        current = (candidate, conv, validate())
    met = steps[best]["target_met"]
    report = {
        "trigger": ("--fallback: the int8 gate failed" if fallback else f"recipe {recipe.name}"),
        "target": target.describe(), "target_met": met, "budget": budget,
        "float_layers": list(floated), "chosen_step": best,
        "ranking": [{"name": s["name"], "added_noise": s["added_noise"], "sqnr_db": s["sqnr_db"]}
                    for s in ranking[:max(budget, 3)]],
        "ranked_by": (f"per-layer measurement of the all-int8 artifact on {layers.n_images} images "
                      f"({layers.method}): noise each layer adds to the residual stream"),
        "steps": steps,
    }
    final_recipe, final_conversion, final_validation = current
    final_conversion.details = {**final_conversion.details, "float_layers": list(floated),
                                "mixed_precision": report}
    return MixedOutcome(final_recipe, final_conversion, final_validation, seconds)
