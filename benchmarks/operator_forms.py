"""LKCA forms x backends x precisions vs the PyTorch conv baseline, a matched ViT and the GEMM peak.

    .venv/bin/python benchmarks/operator_forms.py                  # the full matrix (make bench-perf)
    .venv/bin/python benchmarks/operator_forms.py --quick          # tiny smoke settings
    .venv/bin/python benchmarks/operator_forms.py --help           # every option

The harness is the package ``benchmarks/forms_matrix/`` (one module per phase); this is its entry
script. Outputs: ``OUT/operator_forms.json`` (schema ``lkca-edge-operator-forms/1``) and
``OUT/operator_forms.md``; with ``--out benchmarks/results/operator_forms`` they are the result
files ``benchmarks/render_readme.py`` turns into the figures of benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # forms_matrix beside this script; lkca_edge from this checkout
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from forms_matrix.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
