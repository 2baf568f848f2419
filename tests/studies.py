"""What every committed study (docs/results/<study>/) must show: the comparator regenerates its
tables and report from its committed run files, and its analysis notebook executes against them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report_body(path: Path) -> list[str]:
    # The first lines say when and from where the report was generated; the rest is the data.
    return [line for line in path.read_text().splitlines() if not line.startswith("Generated ")]


def assert_regenerates(study: Path, out: Path) -> None:
    """`python -m agentcoder.compare <study>/runs --report` writes what STUDY holds (tables and report)."""
    import pandas as pd

    runs = study.relative_to(ROOT) / "runs"
    proc = subprocess.run([sys.executable, "-m", "agentcoder.compare", str(runs), "--report", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("comparison.csv", "reasons.csv", "runs.csv"):
        # Run dirs are named relative to the folder given, so the run-dir columns compare too.
        committed, fresh = (pd.read_csv(p) for p in (study / name, out / name))
        pd.testing.assert_frame_equal(fresh, committed, check_exact=False, rtol=1e-9, obj=name)
    assert report_body(out / "report.md") == report_body(study / "report.md")
    listed = set(pd.read_csv(study / "runs.csv")["run_dir"])
    assert listed == {p.name for p in (ROOT / runs).iterdir() if (p / "run.json").is_file()}


def execute_notebook(path: Path) -> None:
    """Runs the notebook PATH in its own folder; no cell may raise."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert outputs and not any(o.output_type == "error" for o in outputs)
