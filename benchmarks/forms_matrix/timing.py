"""Phase 2, in a fresh spawned process (``time_plan``): the torch baselines, every runnable
artifact and the peak GEMMs, alternated round by round; then the per-operator profiles."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .plan import Subject, build_model


def _describe(exc: BaseException) -> str:
    from lkca_edge.errors import describe_exception

    return describe_exception(exc, 300)


def _loadavg() -> list[float]:
    from lkca_edge.hostinfo import load_average

    return load_average() or []


def _onnx_session(threads: int, nodes, inputs, outputs, inits):
    import onnxruntime as ort
    from onnx import helper

    g = helper.make_graph(nodes, "peak", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])


def _peak_gemm_fns(size: int, threads: int) -> list[tuple[str, str, object]]:
    """(method, precision, callable) for large GEMMs at ``threads`` threads."""
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    out = []
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    out.append(("torch.mm fp32", "fp32", lambda: torch.mm(a, b, out=c)))
    ai = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    bi = torch.randint(-128, 127, (size, size), dtype=torch.int8)
    try:
        torch._int_mm(ai[:32, :32], bi[:32, :32])
        out.append(("torch._int_mm s8s8", "int8", lambda: torch._int_mm(ai, bi)))
    except Exception:  # noqa: BLE001 - not on this build
        pass

    f32 = rng.standard_normal((size, size)).astype(np.float32)
    s_f = _onnx_session(
        threads, [helper.make_node("MatMul", ["A", "B"], ["Y"])],
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor("B", TensorProto.FLOAT, [size, size],
                            rng.standard_normal((size, size)).astype(np.float32).tobytes(), raw=True)])
    out.append(("onnxruntime MatMul fp32", "fp32", lambda: s_f.run(None, {"A": f32})))
    u8 = rng.integers(0, 255, (size, size)).astype(np.uint8)
    w8 = rng.integers(-128, 127, (size, size)).astype(np.int8)
    s_i = _onnx_session(
        threads, [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        [helper.make_tensor("B", TensorProto.INT8, [size, size], w8.tobytes(), raw=True)])
    out.append(("onnxruntime MatMulInteger u8s8", "int8", lambda: s_i.run(None, {"A": u8})))
    scalars = [helper.make_tensor("as", TensorProto.FLOAT, [], [0.02]),
               helper.make_tensor("az", TensorProto.UINT8, [], [128]),
               helper.make_tensor("bs", TensorProto.FLOAT, [], [0.01]),
               helper.make_tensor("bz", TensorProto.INT8, [], [0]),
               helper.make_tensor("ys", TensorProto.FLOAT, [], [4.0]),
               helper.make_tensor("yz", TensorProto.UINT8, [], [128]),
               helper.make_tensor("B", TensorProto.INT8, [size, size], w8.tobytes(), raw=True)]
    try:
        s_q = _onnx_session(
            threads, [helper.make_node("QLinearMatMul", ["A", "as", "az", "B", "bs", "bz", "ys", "yz"],
                                       ["Y"])],
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
            [helper.make_tensor_value_info("Y", TensorProto.UINT8, [size, size])], scalars)
        s_q.run(None, {"A": u8[:size]})
        out.append(("onnxruntime QLinearMatMul u8s8", "int8", lambda: s_q.run(None, {"A": u8})))
    except Exception:  # noqa: BLE001
        pass
    return out


class _EtRunners:
    """ExecuTorch runners that are safe to hold together.

    ExecuTorch's Python threadpool is one global pthreadpool, and ``_unsafe_reset_threadpool``
    (called by every ExecuTorchRunner load) destroys it and creates a new one; an XNNPACK method
    loaded before keeps the old pool's pointer and aborts the process on its next run ("The futex
    facility returned an unexpected error code"). So only methods of ONE thread count are alive
    at a time: changing the count drops them all first, then reloads on demand.
    """

    def __init__(self):
        self.threads: int | None = None
        self.live: dict[str, object] = {}

    def get(self, path: str, threads: int):
        import gc

        from lkca_edge.converters import get_backend
        from lkca_edge.logs import quiet

        if threads != self.threads:
            self.live.clear()
            gc.collect()
            self.threads = threads
        runner = self.live.get(path)
        if runner is None:
            with quiet():  # the runtime logs "Resetting threadpool" to fd 2
                runner = get_backend("executorch").load(path, threads=threads)
            self.live[path] = runner
        return runner


def _torch_runner(model):
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


class _Slots:
    """Every (variant, threads) pair ready to time, with the load/run failures met on the way.

    Slots are grouped by thread count: each round times every 1-thread slot, then every 2-thread
    slot (the block order flips every round), so ExecuTorch reloads only at block edges."""

    def __init__(self, plan: dict):
        self.plan = plan
        self.subjects = {s["key"]: Subject(**s) for s in plan["subjects"]}
        self.images = {k: np.ascontiguousarray(v, np.float32) for k, v in plan["images"].items()}
        self.errors: dict[str, str] = {}
        self.gemm_meta: dict[str, dict] = {}
        self.slots: list[dict] = []
        self._et = _EtRunners()
        self._torch_models: dict[tuple, object] = {}

    def _prepare_for(self, v: dict, n: int):
        """A callable that readies this variant for ``n`` threads and returns its run function."""
        import torch

        from lkca_edge.converters import get_backend
        from lkca_edge.logs import quiet

        if v["kind"] == "torch":
            mk = (v["subject"], v["form"])
            if mk not in self._torch_models:
                self._torch_models[mk] = build_model(self.subjects[v["subject"]], form=v["form"])
            fn = _torch_runner(self._torch_models[mk])

            def prep(fn=fn):
                torch.set_num_threads(n)
                return fn
            return prep
        if v["backend"] == "executorch":
            return lambda: self._et.get(v["artifact"], n)
        with quiet():
            runner = get_backend(v["backend"]).load(v["artifact"], threads=n)
        return lambda: runner

    def _add_variants(self, n: int) -> None:
        for v in self.plan["variants"]:
            key = f"{v['id']}|{n}"
            try:
                prep = self._prepare_for(v, n)
                prep()  # loads ExecuTorch now too, so a load failure is reported here
            except Exception as exc:  # noqa: BLE001 - a load failure is recorded, the rest goes on
                self.errors[key] = f"load: {_describe(exc)}"
                continue
            self.slots.append({"key": key, "id": v["id"], "threads": n, "prepare": prep,
                               "runs": self.plan["runs_per_round"],
                               "inputs": self.images[v["subject"]]})

    def _add_gemms(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)
        fns = []
        for size in self.plan["gemm_sizes"]:
            try:
                fns += [(m, p, f, size) for m, p, f in _peak_gemm_fns(size, n)]
            except Exception as exc:  # noqa: BLE001
                self.errors[f"gemm {size}|{n}"] = _describe(exc)
        for method, precision, fn, size in fns:
            vid = f"peak/{method}/{size}"
            self.gemm_meta[vid] = {"method": method, "precision": precision, "size": size}

            def prep(fn=fn, n=n):
                torch.set_num_threads(n)
                return lambda _x: fn()
            self.slots.append({"key": f"{vid}|{n}", "id": vid, "threads": n, "prepare": prep,
                               "runs": self.plan["gemm_runs"], "inputs": None})

    def load(self) -> None:
        for n in self.plan["threads"]:
            self._add_variants(n)
            self._add_gemms(n)

    def warm(self) -> None:
        """Run every slot once, so first-call costs (prepacking, allocation) are not timed."""
        for s in list(self.slots):
            try:
                fn = s["prepare"]()
                for _ in range(max(1, self.plan["warmup"])):
                    fn(s["inputs"][:1] if s["inputs"] is not None else None)
            except Exception as exc:  # noqa: BLE001
                self.errors[s["key"]] = f"run: {_describe(exc)}"
                self.slots.remove(s)

    def blocks(self) -> list[list[dict]]:
        return [[s for s in self.slots if s["threads"] == n] for n in self.plan["threads"]]


def _round_order(blocks: list[list[dict]], r: int) -> list[dict]:
    """Round ``r``'s slot order: a different variant goes first every round, and every other
    round runs backwards, so drift and position effects hit every variant alike."""
    order = []
    for block in (blocks if r % 2 == 0 else blocks[::-1]):
        k = r % len(block) if block else 0
        rotated = block[k:] + block[:k]
        order += rotated if r % 2 == 0 else rotated[::-1]
    return order


def _time_slice(s: dict, warmup: int, budget: float, out: list[float]) -> tuple[bool, float, float]:
    """One slice of one slot: warm-up runs, then timed runs appended to ``out``.

    Returns (stopped early by the budget, process CPU seconds, wall seconds)."""
    fn = s["prepare"]()
    x_all = s["inputs"]
    for w in range(warmup):
        fn(x_all[w % len(x_all): w % len(x_all) + 1] if x_all is not None else None)
    c0, w0 = time.process_time(), time.perf_counter()
    cut = False
    for i in range(s["runs"]):
        x = x_all[i % len(x_all): i % len(x_all) + 1] if x_all is not None else None
        t0 = time.perf_counter_ns()
        fn(x)
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if i >= 2 and time.perf_counter() - w0 > budget:
            cut = True
            break
    return cut, time.process_time() - c0, time.perf_counter() - w0


def _summary(s: dict, xs: list[float], per_round: list[list[float]], cut: int,
             cpu_ratio: list[float]) -> dict:
    q = np.percentile(xs, [10, 25, 50, 75, 90])
    return {"id": s["id"], "threads": s["threads"], "n": len(xs), "slices_cut_by_budget": cut,
            "median_ms": float(q[2]), "p10_ms": float(q[0]), "p25_ms": float(q[1]),
            "p75_ms": float(q[3]), "p90_ms": float(q[4]), "min_ms": float(min(xs)),
            "round_medians_ms": [float(np.median(r)) for r in per_round if r],
            "cpu_per_wall": float(statistics.median(cpu_ratio)) if cpu_ratio else None}


def time_plan(plan: dict) -> dict:
    """Load every variant, then time them alternated. Runs in a spawned child process."""
    import gc

    rounds, runs, warmup = plan["rounds"], plan["runs_per_round"], plan["warmup"]
    budget = plan.get("slice_budget", 1.5)
    ready = _Slots(plan)
    ready.load()
    ready.warm()
    slots, blocks = ready.slots, ready.blocks()

    samples: dict[str, list[float]] = {s["key"]: [] for s in slots}
    per_round: dict[str, list[list[float]]] = {s["key"]: [] for s in slots}
    cpu_ratio: dict[str, list[float]] = {s["key"]: [] for s in slots}
    truncated: dict[str, int] = {}
    loads = []
    print(f"timing {len(slots)} (variant, threads) slots: {rounds} rounds x "
          f"{runs} runs (+{warmup} warm-up per slice)", flush=True)
    t_start = time.perf_counter()
    gc.disable()
    try:
        for r in range(rounds):
            loads.append(_loadavg())
            for s in _round_order(blocks, r):
                out = samples[s["key"]]
                start = len(out)
                cut, cpu, wall = _time_slice(s, warmup, budget, out)
                if cut:
                    truncated[s["key"]] = truncated.get(s["key"], 0) + 1
                per_round[s["key"]].append(out[start:])
                if wall > 0:
                    cpu_ratio[s["key"]].append(cpu / wall)
            gc.collect()
            print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s, "
                  f"load {loads[-1][0] if loads[-1] else '?'})", flush=True)
    finally:
        gc.enable()
    loads.append(_loadavg())

    timings = {s["key"]: _summary(s, samples[s["key"]], per_round[s["key"]],
                                  truncated.get(s["key"], 0), cpu_ratio[s["key"]])
               for s in slots if samples[s["key"]]}
    profiles = _profiles(plan, ready.subjects, ready.images) if plan.get("profile") else {}
    return {"timings": timings, "errors": ready.errors, "gemm": ready.gemm_meta,
            "loadavg_per_round": loads, "seconds": round(time.perf_counter() - t_start, 1),
            "profiles": profiles}


def _torch_profile(model, x: np.ndarray) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(5):
            model(torch.from_numpy(x))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                model(torch.from_numpy(x))
    return [{"op": e.key, "ms": e.self_cpu_time_total / 20 / 1000.0, "count": e.count // 20}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]


def _profiles(plan, subjects, images) -> dict:
    """Where the time goes: ORT's profiler for the target subject's ONNX artifacts, torch's for
    the baseline (1 thread). Other runtimes report nothing per operator from Python."""
    import torch

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet

    target = plan["profile_subject"]
    out = {}
    n = min(plan["threads"])
    for v in plan["variants"]:
        if v.get("subject") != target and v.get("subject") != plan.get("profile_vit"):
            continue
        x = images[v["subject"]][:1]
        try:
            if v["kind"] == "torch" and v["form"] in ("conv", plan.get("profile_form")):
                torch.set_num_threads(n)
                rows = _torch_profile(build_model(subjects[v["subject"]], form=v["form"]), x)
            elif v["kind"] == "artifact" and v["backend"] == "onnx":
                with quiet():
                    runner = get_backend("onnx").load(v["artifact"], threads=n)
                    rows = runner.operator_profile(x, runs=30)
            else:
                continue
        except Exception as exc:  # noqa: BLE001
            out[v["id"]] = {"error": _describe(exc)}
            continue
        total = sum(r["ms"] for r in rows) or 1.0
        rows = sorted(rows, key=lambda r: -r["ms"])
        out[v["id"]] = {"threads": n, "total_ms": total,
                        "ops": [{**r, "share": r["ms"] / total} for r in rows[:8]]}
    return out
