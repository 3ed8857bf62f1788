"""bm.tl.cluster: neighbours, leiden at several resolutions, UMAP (incl. the >=10k-cell path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

anndata = pytest.importorskip("anndata")
pytest.importorskip("scanpy")

from sklearn.metrics import adjusted_rand_score  # noqa: E402

import bonemet as bm  # noqa: E402
from bonemet._errors import InputError  # noqa: E402


def _embedded(n: int, k: int = 5, dim: int = 8, seed: int = 0, pca_noise: float = 4.0):
    """Well-separated clusters in a low-dim 'latent'; X_pca is a noisier view of it."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 8, size=(k, dim))
    lab = rng.integers(0, k, n)
    emb = (centers[lab] + rng.normal(size=(n, dim))).astype(np.float32)
    adata = anndata.AnnData(
        obs=pd.DataFrame(
            {"truth": pd.Categorical(lab.astype(str))}, index=[f"c{i}" for i in range(n)]
        )
    )
    adata.obsm["X_scVI"] = emb
    adata.obsm["X_pca"] = emb + rng.normal(0, pca_noise, size=emb.shape).astype(np.float32)
    return adata


def test_cluster_writes_contract_and_recovers_truth(tmp_path):
    adata = _embedded(600)
    bm.tl.cluster(adata, resolutions=(0.2, 0.5), resolution=0.2, n_neighbors=10)
    for key in ("leiden_0.2", "leiden_0.5", "leiden"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype)
    assert adata.obs["leiden"].equals(adata.obs["leiden_0.2"])
    assert adjusted_rand_score(adata.obs["truth"], adata.obs["leiden"]) > 0.9
    assert adata.obsm["X_umap"].shape == (600, 2)
    assert adata.obsm["X_umap_unintegrated"].shape == (600, 2)
    assert not np.allclose(adata.obsm["X_umap"], adata.obsm["X_umap_unintegrated"])
    # the main graph is the integrated one, not the PCA one
    assert adata.uns["neighbors"]["params"]["use_rep"] == "X_scVI"
    assert not any(k.startswith("neighbors_unintegrated") for k in (*adata.uns, *adata.obsp))
    info = adata.uns["bonemet"]["cluster"]
    assert info["use_rep"] == "X_scVI" and info["n_clusters"]["leiden_0.2"] >= 2
    adata.write_h5ad(tmp_path / "c.h5ad")


def test_main_resolution_added_when_missing_and_seeded():
    a1, a2 = _embedded(400, seed=1), _embedded(400, seed=1)
    bm.tl.cluster(a1, resolutions=(0.5,), resolution=1.0, seed=3)
    bm.tl.cluster(a2, resolutions=(0.5,), resolution=1.0, seed=3)
    assert "leiden_1.0" in a1.obs and a1.obs["leiden"].equals(a1.obs["leiden_1.0"])
    # the seeded graph and clusters (everything annotation and scoring read) are identical
    assert (a1.obsp["connectivities"] != a2.obsp["connectivities"]).nnz == 0
    for key in ("leiden", "leiden_0.5"):
        assert a1.obs[key].equals(a2.obs[key])
    # UMAP coordinates are *not* compared: on a fresh install umap-learn's numba kernels are
    # compiled and cached during the run, and the first runs can then differ in the last
    # bits, which UMAP's SGD amplifies (seen in CI; README "Limits"). Each run's layout
    # still separates the planted populations.
    from sklearn.metrics import silhouette_score

    for a in (a1, a2):
        assert silhouette_score(a.obsm["X_umap"], a.obs["truth"]) > 0.5


def test_use_rep_defaults():
    adata = _embedded(300)
    adata.obsm["X_harmony"] = adata.obsm.pop("X_scVI")
    adata.uns["bonemet"] = {"integrate": {"use_rep": "X_harmony"}}
    bm.tl.cluster(adata, resolutions=(0.5,), resolution=0.5)
    assert adata.uns["bonemet"]["cluster"]["use_rep"] == "X_harmony"
    only_pca = _embedded(300)
    del only_pca.obsm["X_scVI"]
    bm.tl.cluster(only_pca, resolutions=(0.5,), resolution=0.5)
    assert only_pca.uns["bonemet"]["cluster"]["use_rep"] == "X_pca"
    np.testing.assert_array_equal(only_pca.obsm["X_umap"], only_pca.obsm["X_umap_unintegrated"])


def test_copy_and_errors():
    adata = _embedded(200)
    out = bm.tl.cluster(adata, resolutions=(0.5,), resolution=0.5, copy=True)
    assert "leiden" in out.obs and "leiden" not in adata.obs
    with pytest.raises(InputError, match="X_missing"):
        bm.tl.cluster(adata, use_rep="X_missing")
    empty = anndata.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(50)]))
    with pytest.raises(InputError, match="run integrate first"):
        bm.tl.cluster(empty)


@pytest.mark.slow
def test_ten_thousand_cells_use_pynndescent():
    """>= 10,000 cells: scanpy switches to pynndescent; pynndescent 0.7 broke scanpy 1.11 here.

    Low-dimensional latent, no X_pca (one neighbours graph and one UMAP) to keep it short.
    """
    import pynndescent
    from packaging.version import Version

    assert Version(pynndescent.__version__) < Version("0.7")
    adata = _embedded(10_050, k=6, dim=5, seed=4)
    del adata.obsm["X_pca"]
    bm.tl.cluster(adata, resolutions=(0.1,), resolution=0.1)
    assert adata.obsp["connectivities"].shape == (10_050, 10_050)
    assert adata.obsm["X_umap"].shape == (10_050, 2)
    assert adjusted_rand_score(adata.obs["truth"], adata.obs["leiden"]) > 0.9


def test_before_integration_umap_is_a_bounded_sample():
    """The report's before-integration UMAP costs at most ``unintegrated_cells`` cells; the
    clusters and the integrated UMAP do not depend on it (ARI 1.0)."""
    full, part, none = (_embedded(900, seed=4) for _ in range(3))
    bm.tl.cluster(full, resolutions=(0.5,), resolution=0.5, seed=1)
    bm.tl.cluster(part, resolutions=(0.5,), resolution=0.5, seed=1, unintegrated_cells=300)
    bm.tl.cluster(none, resolutions=(0.5,), resolution=0.5, seed=1, unintegrated_cells=0)
    for other in (part, none):
        assert adjusted_rand_score(full.obs["leiden"], other.obs["leiden"]) == 1.0
        assert (full.obsp["connectivities"] != other.obsp["connectivities"]).nnz == 0
    drawn = np.isfinite(part.obsm["X_umap_unintegrated"]).all(axis=1)
    assert drawn.sum() == 300 and np.isnan(part.obsm["X_umap_unintegrated"][~drawn]).all()
    assert part.uns["bonemet"]["cluster"]["unintegrated_umap_cells"] == 300
    assert "X_umap_unintegrated" not in none.obsm
    assert none.uns["bonemet"]["cluster"]["unintegrated_umap_cells"] == 0
    fig = bm.pl.integration_umaps(part, color=("truth",))
    assert "300 of 900 cells" in fig.axes[0].get_title()
