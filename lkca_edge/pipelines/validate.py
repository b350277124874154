"""``lkca-edge validate``: an artifact against its fp32 source on real held-out images.

By default the artifact is validated on its validation pack (the held-out images, labels and
fp32 reference logits recorded at export): no torch, no data set needed, so it runs on a board
with only the runtime. ``--dataset SPEC`` validates on other data instead: its labels are matched
to the model's by name and the fp32 source model is rebuilt (torch) for the reference.
"""

from __future__ import annotations

import importlib.util

from lkca_edge.errors import UserError
from lkca_edge.gates import (DYNAMIC_BATCH, ValidationResult, apply_gate, gate_for, not_runnable,
                             validate_logits)


def static_validation(backend, path, model, images, labels, reference, precision: str,
                      reason: str, *, trained: bool = True, data: str | None = None,
                      labels_note: str = "") -> ValidationResult:
    """For an artifact this OS cannot run: the backend's structural checks, plus its off-device
    accuracy estimate where it has one (labelled ``estimate``; never a device measurement)."""
    result = not_runnable(backend.name, precision, reference, labels, reason, trained=trained,
                          data=data, labels_note=labels_note)
    if not hasattr(backend, "validate_static"):
        return result
    static = backend.validate_static(path, model, images=images, labels=labels)
    est = static.get("estimate")
    if est and est.get("accuracy") is not None:
        result.estimate = True
        for key in ("accuracy", "top1_agreement", "max_abs_err", "mean_abs_err", "cosine",
                    "decisive_agreement", "n_decisive"):
            if key in est:
                setattr(result, key, est.get(key))
        apply_gate(result, gate_for(precision, trained))
    if static.get("passed") is False:
        result.passed = False
        result.failures = list(static.get("failures", [])) + result.failures
    result.note = f"{result.note}. {static.get('note', '')}".strip()
    return result


def _classes(manifest) -> int:
    config = manifest.config or {}
    if isinstance(config.get("num_classes"), int):
        return config["num_classes"]
    shape = (manifest.outputs[0].get("shape") if manifest.outputs else None) or [0]
    return int(shape[-1])


def validation_inputs(artifact, manifest, prep, dataset: str | None, limit: int | None):
    """(images, labels, reference logits, data spec, labels note, where) to validate on: the
    validation pack, or ``dataset`` with the rebuilt source model's logits."""
    from lkca_edge.validation_pack import read_pack

    if dataset is None and manifest.validation_pack:
        pack = read_pack(artifact, manifest.validation_pack)
        n = min(limit or len(pack), len(pack))
        spec = (manifest.data or {}).get("spec")
        where = f"its validation pack ({n} held-out images of {spec or 'the export data'})"
        return (pack.images(prep)[:n], pack.labels[:n], pack.reference_logits[:n], spec,
                (manifest.validation or {}).get("labels_note", ""), where)
    if importlib.util.find_spec("torch") is None:
        raise UserError("validating on a data set needs the fp32 source model, which needs torch "
                        "(pip install 'lkca-edge[convert]'); without --dataset, validate uses the "
                        "artifact's validation pack" + ("" if manifest.validation_pack else
                                                        ", which this artifact has none of"))
    from lkca_edge.builder import rebuild_source_model
    from lkca_edge.data import load_for_model, recorded_spec
    from lkca_edge.evaluation import reference_logits

    spec = recorded_spec(dataset, manifest.data_record(), "--dataset", f"{artifact.name}")
    model = rebuild_source_model(manifest)
    data = load_for_model(spec, prep, prep.labels, _classes(manifest), manifest.model)
    n = min(limit or len(data.test_x), len(data.test_x))
    x, y = data.test_x[:n], data.test_y[:n]
    return x, y, reference_logits(model, x), spec, data.note, f"{n} test images of {spec}"


def validate_artifact(artifact, dataset: str | None = None, limit: int | None = None,
                      threads: int = 1, verify: bool = True, *, remote: str | None = None,
                      remote_command: str | None = None, ssh_options=()) -> ValidationResult:
    """`lkca-edge validate`: the artifact against its fp32 source on real held-out images;
    ``remote`` (``ssh://USER@HOST[:PORT]``) runs it on a board, on the validation pack."""
    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.profiles.remote import AdbTarget, SshTarget, parse_remote
    from lkca_edge.ranges import check_arg, check_optional

    check_optional("limit", limit)
    check_arg("threads", threads)
    target = parse_remote(remote)
    if isinstance(target, AdbTarget):
        raise UserError("validate --remote takes ssh:// boards: adb runners (benchmark_model, "
                        "executor_runner) print no logits to validate")
    if remote_command and not isinstance(target, SshTarget):
        raise UserError("--remote-command names the lkca-edge on an ssh:// board; it needs "
                        "--remote ssh://USER@HOST")
    artifact, manifest, backend = open_artifact(artifact, verify)
    if isinstance(target, SshTarget):
        if dataset is not None:
            raise UserError("on a board, validate uses the artifact's validation pack (drop --dataset)")
        if not manifest.validation_pack:
            raise UserError(f"{artifact.name} has no validation pack to validate on a board "
                            f"(export it again with this lkca-edge)")
        from lkca_edge.profiles.remote import validate_over_ssh

        return validate_over_ssh(target, artifact, command=remote_command, options=ssh_options,
                                 limit=limit, threads=threads, verify=verify)
    return _validate_here(artifact, manifest, backend, dataset, limit, threads)[0]


def _validate_here(artifact, manifest, backend, dataset, limit, threads):
    """Validation on this machine of an opened artifact: (result, the images, preprocessing)."""
    from lkca_edge.hostinfo import cap_threads
    from lkca_edge.isolation import run_isolated
    from lkca_edge.pipelines.artifacts import run_artifact, static_check
    from lkca_edge.preprocessing import Preprocessing

    gate_for(manifest.precision, manifest.trained)  # an unknown precision is refused first
    threads = cap_threads(threads)  # this host's cores (a board caps its own)
    prep = Preprocessing.from_dict(manifest.preprocessing)
    x, y, ref, spec, labels_note, where = validation_inputs(artifact, manifest, prep, dataset, limit)
    common = dict(trained=manifest.trained, data=spec, labels_note=labels_note)
    inputs = prep.as_input(x, manifest.input_kind)  # what the artifact takes (pixels for images)
    reason = backend.runnable()
    if reason is not None:
        static_check(backend, artifact)  # a file its backend cannot even read is refused
        result = not_runnable(backend.name, manifest.precision, ref, y, reason, **common)
        stored = manifest.validation or {}
        if stored.get("estimate"):
            result.note = f"{result.note}; export-time estimate: {stored.get('note', '')}"
        return result, x, prep
    logits = run_isolated(run_artifact, backend.name, str(artifact), inputs, threads,
                          what=f"the {backend.name} runtime loading {artifact.name}")
    result = validate_logits(logits, ref, y, backend.name, manifest.precision, note=f"on {where}",
                             **common)
    if has_dynamic_batch(manifest):
        batched = run_isolated(run_artifact, backend.name, str(artifact), inputs, threads,
                               DYNAMIC_BATCH, what=f"the {backend.name} runtime loading {artifact.name}")
        result.add_batch(validate_logits(batched, ref, y, backend.name, manifest.precision,
                                         **common), DYNAMIC_BATCH)
    return result, x, prep


def has_dynamic_batch(manifest) -> bool:
    """True when the manifest's input has a named (dynamic) batch dimension."""
    shape = (manifest.inputs[0].get("shape") if manifest.inputs else None) or [1]
    return isinstance(shape[0], str)


def validate_per_layer(artifact, dataset: str | None = None, limit: int | None = None,
                       threads: int = 1, verify: bool = True):
    """`lkca-edge validate --per-layer`: the validation and every layer's error against the fp32
    source, on the same images. It runs whatever the gate says: a failing artifact is when the
    layers matter. Needs torch (the source model's layers are the reference)."""
    from lkca_edge.pipelines.artifacts import open_artifact
    from lkca_edge.ranges import check_arg, check_optional

    if importlib.util.find_spec("torch") is None:
        raise UserError("--per-layer compares with the fp32 source model's layers, which needs "
                        "torch (pip install 'lkca-edge[convert]')")
    check_optional("limit", limit)
    check_arg("threads", threads)
    from lkca_edge.builder import rebuild_source_model
    from lkca_edge.hostinfo import cap_threads
    from lkca_edge.pipelines.per_layer import measure_layers

    threads = cap_threads(threads)
    artifact, manifest, backend = open_artifact(artifact, verify)
    result, x, prep = _validate_here(artifact, manifest, backend, dataset, limit, threads)
    layers = measure_layers(backend, artifact, rebuild_source_model(manifest), x,
                            inputs=prep.as_input(x, manifest.input_kind),
                            precision=manifest.precision,
                            recipe=(manifest.recipe or {}).get("name", ""), threads=threads)
    return result, layers
