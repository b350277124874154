"""Bench results: the ``results.json`` schema and CSV (``schema``), what the figures mean
(``analysis``) and the SQLite run history (``history``). Standard library only."""

from lkca_edge.results.analysis import (CellChange, Thresholds, best_cells, compare_results,
                                        is_estimate, pareto_front, ship_line, what_to_ship)
from lkca_edge.results.history import (DB_ENV, ResultsStore, RunRow, default_db_path, load_run,
                                       new_run_id, resolve_db_path)
from lkca_edge.results.schema import (CSV_COLUMNS, METRICS, SCHEMA, cell_key, cell_name,
                                      check_results, csv_rows, metric, ok_cells, read_results,
                                      to_csv)

__all__ = ["CSV_COLUMNS", "CellChange", "DB_ENV", "METRICS", "ResultsStore", "RunRow", "SCHEMA",
           "Thresholds", "best_cells", "cell_key", "cell_name", "check_results",
           "compare_results", "csv_rows", "default_db_path", "is_estimate", "load_run", "metric",
           "new_run_id", "ok_cells", "pareto_front", "read_results", "resolve_db_path",
           "ship_line", "to_csv", "what_to_ship"]
