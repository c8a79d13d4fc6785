"""notebooks/ablation_report.ipynb (issue 4): committed without outputs, and runs top to bottom on a
sweep made by the smoke preset (the shared `smoke_sweep` fixture), showing the tables and plots."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import ROOT, sweep_ok

NOTEBOOK = ROOT / "notebooks" / "ablation_report.ipynb"
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_committed_notebook_has_no_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for i, cell in enumerate(code):
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"code cell {i} has outputs"
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))


def _client(nb, cwd: Path):
    # kernel "python3" is the current interpreter: jupyter_client runs a kernel spec's `python` as
    # sys.executable, and ipykernel always provides the native python3 spec.
    return nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                                   resources={"metadata": {"path": str(cwd)}})


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_sweep(smoke_sweep, monkeypatch) -> None:
    sweep = sweep_ok(smoke_sweep)
    monkeypatch.setenv("ROBABLATE_SWEEP", str(sweep))
    monkeypatch.setenv("ROBABLATE_BOOTSTRAP", "300")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _client(nb, NOTEBOOK.parent).execute()  # raises CellExecutionError on any failing cell
    outs = _outputs(nb)
    text = "".join(o.get("text", "") for o in outs if o["output_type"] == "stream")
    assert f"sweep: {sweep.resolve()}" in text
    assert "4 complete runs; varied axes: ['masking']" in text
    html = "".join(o["data"].get("text/html", "") for o in outs if "data" in o)
    assert "static (base)" in html and "dynamic - static" in html and "frac pretrain" in html
    pngs = [o for o in outs if "data" in o and "image/png" in o["data"]]
    assert len(pngs) >= 4  # tasks, GLUE score, MLM curve, throughput for the masking axis
    assert not any(o["output_type"] == "error" for o in outs)


def test_notebook_defaults_to_the_newest_sweep(tmp_path, monkeypatch) -> None:
    """Without ROBABLATE_SWEEP the notebook finds the repository (conf/config.yaml above the working
    folder) and takes the newest outputs/*/multirun/* folder."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("{}\n")
    newest = tmp_path / "outputs" / "smoke" / "multirun" / "2020-01-01_00-00-00"
    older = tmp_path / "outputs" / "roberta_table1" / "multirun" / "2020-01-02_00-00-00"
    for d, age in ((newest, 0), (older, 100)):  # the modification time decides, not the name
        d.mkdir(parents=True)
        os.utime(d, (time.time() - age, time.time() - age))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.delenv("ROBABLATE_SWEEP", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    client = _client(nb, tmp_path / "notebooks")
    with client.setup_kernel():
        client.execute_cell(nb.cells[setup], setup)
    text = "".join(o.get("text", "") for o in nb.cells[setup].outputs)
    assert f"sweep: {newest.resolve()}" in text, text
