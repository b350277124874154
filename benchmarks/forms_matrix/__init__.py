"""LKCA forms x backends x precisions vs the PyTorch conv baseline, a matched ViT and the GEMM peak.

Latency of every operator form on every backend and precision against the paper's PyTorch eager
conv form, against a matched softmax ViT, and against this CPU's measured GEMM peak, in one run.

    .venv/bin/python benchmarks/operator_forms.py                  # the full matrix (make bench-perf)
    .venv/bin/python benchmarks/operator_forms.py --quick          # tiny smoke settings
    .venv/bin/python benchmarks/operator_forms.py --models lkca-1m --threads 1 2 \\
        --rounds 10 --runs-per-round 20 --cache .lkca-edge-cache/forms --out runs/forms

Phases:
1. Convert: every (model, backend, form, recipe) cell through ``export_model`` (the export
   pipeline), then validated on real digits test images against the torch source with the export
   gates. A cell that fails to convert, to load or its gate is kept with its one-line reason.
   ``--cache DIR`` keeps artifacts and their records, keyed by the converter sources, tool
   versions, weights and settings, so a re-run converts only what changed.
2. Time (in a fresh child process): the torch eager baselines, every runnable artifact and the
   large fp32/int8 GEMMs, each with 1 and 2 threads, alternated: every round times every
   (variant, threads) pair for a slice of runs, so machine drift hits all of them alike. The
   reported figure is the median over all rounds.
3. Report: JSON + markdown (medians, speed-up over the baseline, achieved GMAC/s, share of the
   measured peak, the issue's targets met / not met, conversion times, the form rule table
   measured here against ``EXPORT_FORM_RULES``, where the time goes per operator).

One module per phase: ``settings`` (options), ``plan`` (models and cells), ``convert`` (phase 1),
``timing`` (phase 2, in the child), ``analysis`` and ``targets`` (phase 3's figures), ``report``
(phase 3's markdown; standard library only, so ``render_readme.py`` can use it anywhere) and
``main``. ``benchmarks/operator_forms.py`` is the entry script.
"""
