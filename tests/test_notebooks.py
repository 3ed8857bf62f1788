"""Every tutorial notebook runs from top to bottom on small generated data.

The jupytext percent-format ``notebooks/*.py`` files are the source of truth; the paired
``.ipynb`` must hold the same cells (regenerate with ``jupytext --to ipynb
notebooks/*.py``). Each notebook is executed with nbclient in a fresh kernel, with
``BONEMET_NB_CELLS`` / ``BONEMET_NB_EPOCHS`` keeping it small; a cell that raises fails
the test and names the cell.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebooks

jupytext = pytest.importorskip("jupytext", reason="install the test extras: pip install -e .[test]")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
NB_CELLS = "1000"
NB_EPOCHS = "1"


def test_the_four_tutorials_exist() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_quickstart",
        "02_signatures",
        "03_populations_and_axes",
        "04_from_nextflow_or_geo",
    ]


@pytest.mark.parametrize("py", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_paired_ipynb_matches_the_py(py: Path) -> None:
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `jupytext --to ipynb {py}`"
    src = jupytext.read(py)
    paired = nbformat.read(ipynb, as_version=4)

    def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert cells(paired) == cells(src), (
        f"{ipynb.name} is out of date with {py.name}: run `jupytext --to ipynb {py}`"
    )


@pytest.mark.parametrize("py", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(py: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = jupytext.read(py)
    monkeypatch.setenv("BONEMET_NB_CELLS", NB_CELLS)
    monkeypatch.setenv("BONEMET_NB_EPOCHS", NB_EPOCHS)
    monkeypatch.setenv("BONEMET_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        failing = next(
            (
                i
                for i, c in enumerate(nb.cells)
                if c.cell_type == "code"
                and any(o.get("output_type") == "error" for o in c.get("outputs", []))
            ),
            None,
        )
        head = nb.cells[failing].source.splitlines()[:3] if failing is not None else []
        pytest.fail(
            f"{py.name}: cell {failing} raised:\n{chr(10).join(head)}\n...\n{e}", pytrace=False
        )
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was displayed"
    assert os.listdir(tmp_path / "out")
