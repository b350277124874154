"""Names of the LKCA operator forms and which one each backend exports by default (no torch)."""

from __future__ import annotations

from lkca_edge.errors import unknown_name

LKCA_FORMS = ("conv", "toeplitz", "frozen", "frozen-linear", "fused")

# (backend, precision) -> form exported unless the user forces one with --form.
# `fused` (the frozen matrix as a Linear over tokens, applied before ONE merged channel Linear,
# LayerNorm affines folded forward) is the fastest measured form on every backend that runs
# here, in fp32 and int8: fewer MACs (-15 % in lkca-1m), fewer graph ops, smaller artifacts.
# Core ML cannot be timed on Linux; it gets `fused` for the same op and MAC counts (its artifact
# is 16 % smaller: 3,579 vs 4,265 KB in fp32).
# Measured table and how to re-measure it: benchmarks/README.md.
EXPORT_FORM_RULES: dict[tuple[str, str], str] = {
    ("executorch", "fp32"): "fused",
    ("executorch", "int8"): "fused",
    ("tflite", "fp32"): "fused",
    ("tflite", "int8"): "fused",
    ("onnx", "fp32"): "fused",
    ("onnx", "int8"): "fused",
    ("coreml", "fp32"): "fused",
    ("coreml", "fp16"): "fused",
    ("coreml", "int8"): "fused",
}
EXPORT_DEFAULT_FORM = "fused"


def check_form(form: str) -> str:
    if form not in LKCA_FORMS:
        raise unknown_name("form", form, LKCA_FORMS)
    return form


def default_export_form(backend: str, precision: str) -> str:
    return EXPORT_FORM_RULES.get((backend, precision), EXPORT_DEFAULT_FORM)
