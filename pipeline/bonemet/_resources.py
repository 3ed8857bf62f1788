"""Where the packaged data live: ``signatures/`` and ``configs/``.

In a wheel they are inside the package (``bonemet/signatures``, ``bonemet/configs``);
in a source checkout (editable install) they are at the repository root.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_REPO = _PKG.parents[1]


def _find(name: str) -> Path:
    for cand in (_PKG / name, _REPO / name):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"bonemet's {name}/ folder is missing from the installation ({_PKG})")


def signatures_dir() -> Path:
    """Folder of the curated gene-set YAML files."""
    return _find("signatures")


def configs_dir() -> Path:
    """Folder of the shipped run configs (default, demo, test, gpu, geo/)."""
    return _find("configs")


def package_data_dir() -> Path:
    """Folder of small data files shipped with the package (gene universes…)."""
    return _PKG / "data"
