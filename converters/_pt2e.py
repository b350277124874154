"""PT2E quantization as every backend runs it: export -> prepare -> calibrate -> convert.

One calibration loop for ExecuTorch, LiteRT and Core ML. The graph is exported with a dynamic
batch dimension where the model allows, so the real calibration images go through in batches
(an observer call costs ~0.2 s whatever its batch: 128 batch-1 calls dominated a conversion).
"""

from __future__ import annotations

import contextlib

import numpy as np

from lkca_edge.errors import UserError

CALIBRATION_BATCH = 32  # images per calibration call


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run with ``n`` intra-op threads, then restore the caller's setting.

    Conversion is graph surgery and observers on tiny tensors: extra OpenMP threads buy nothing
    and, on a busy machine, their spin-waits made calibration (HistogramObserver) 30x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_for_calibration(model, example: np.ndarray, calibration: np.ndarray):
    """(graph module in eval mode, batch size): dynamic batch when the model exports that way,
    else the static batch-1 graph calibrated one image at a time."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval

    if len(calibration) >= 2:
        try:
            batch = torch.export.Dim("batch", min=1, max=max(2, len(calibration)))
            program = torch.export.export(model, (torch.from_numpy(calibration[:2]),),
                                          dynamic_shapes=({0: batch},))
            return move_exported_model_to_eval(program.module()), CALIBRATION_BATCH
        except Exception:  # data-dependent shapes etc.: calibrate one image at a time
            pass
    program = torch.export.export(model, (torch.from_numpy(example),))
    return move_exported_model_to_eval(program.module()), 1


def quantize(model, example: np.ndarray, quantizer, calibration: np.ndarray, *,
             calibrated: bool = True, fold_quantize: bool = True):
    """The PT2E-quantized graph module of ``model`` (prepared with ``quantizer``, observed on the
    real ``calibration`` images, converted). Dynamic recipes (``calibrated=False``) observe only
    weights: one image is enough."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibrated and (calibration is None or len(calibration) == 0):
        raise UserError("static int8 needs calibration images")
    images = calibration if calibrated else calibration[:1]
    # float32 images, or uint8 pixels for a graph that takes an image (lkca_edge.image_input)
    images = np.ascontiguousarray(images, np.uint8 if images.dtype == np.uint8 else np.float32)
    with torch.no_grad(), torch_threads(1):
        graph, batch = export_for_calibration(model, example, images)
        prepared = prepare_pt2e(graph, quantizer)
        for i in range(0, len(images), batch):
            prepared(torch.from_numpy(images[i:i + batch]))
        converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    converted.training = False  # an inference graph (litert-torch warns otherwise)
    return converted
