"""The typed config: defaults, overrides, and errors that list every problem."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import bonemet as bm
from bonemet._errors import ConfigError
from bonemet._resources import configs_dir
from bonemet.config import load_config


def test_defaults_match_default_yaml():
    cfg = load_config()
    raw = yaml.safe_load((configs_dir() / "default.yaml").read_text())
    assert cfg.integrate.method == raw["integrate"]["method"] == "scvi"
    assert cfg.qc.max_pct_mito == raw["qc"]["max_pct_mito"]
    assert cfg.normalize.n_top_genes == raw["normalize"]["n_top_genes"]
    # every key of default.yaml is a field of the schema and vice versa
    assert set(raw) == set(cfg.to_dict())
    for section, values in raw.items():
        if isinstance(values, dict):
            assert set(values) == set(cfg.to_dict()[section]), section


@pytest.mark.parametrize("name", ["default", "demo", "test", "gpu"])
def test_shipped_configs_validate(name):
    cfg = load_config(configs_dir() / f"{name}.yaml")
    assert isinstance(cfg, bm.Config)


def test_partial_override_keeps_other_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("integrate:\n  max_epochs: 3\n")
    cfg = load_config(p)
    assert cfg.integrate.max_epochs == 3
    assert cfg.integrate.n_latent == load_config().integrate.n_latent


def test_bad_config_lists_every_problem_at_once(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "qc:\n  max_pct_mito: -5\n  min_genez: 10\nintegrate:\n  method: tsne\nclusterr: {}\n"
    )
    with pytest.raises(bm.ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "4 problems" in msg
    for part in ("qc.max_pct_mito", "qc.min_genez", "integrate.method", "clusterr", "unknown key"):
        assert part in msg, part
    assert "\n" not in msg


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(bm.ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("qc: [unclosed\n")
    with pytest.raises(bm.ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(bm.ConfigError, match="mapping"):
        load_config(p)


def test_geo_accession_checked():
    with pytest.raises(bm.ConfigError, match="GEO series accession"):
        load_config({"input": {"geo": "GSM12345"}})
    assert load_config({"input": {"geo": "GSE143791"}}).input.geo == "GSE143791"


def test_yaml_is_never_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(bm.ConfigError, match="not valid YAML"):
        load_config(p)


# ----------------------------------------------------------------------------- stage slices
def _config_reads(func: ast.FunctionDef) -> set[str]:
    """Dotted config keys a stage function reads: ``cfg.a.b`` chains and section_dict('x')."""
    reads: set[str] = set()
    inner = {  # cfg.a inside cfg.a.b: only the whole chain counts
        id(n.value) for n in ast.walk(func) if isinstance(n, ast.Attribute)
    }
    for node in ast.walk(func):
        if id(node) in inner:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("section_dict", "to_dict") and isinstance(
                node.func.value, ast.Name
            ):
                if node.func.attr == "to_dict":
                    reads.add("")  # the whole config
                else:
                    reads.add(node.args[0].value)
                continue
        if isinstance(node, ast.Attribute):
            chain = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "cfg":
                keys = [k for k in reversed(chain) if k not in ("section_dict", "to_dict")]
                if keys:
                    reads.add(".".join(keys[:2]))
    return reads


def test_stage_sections_cover_what_each_stage_reads() -> None:
    """The runner's resume keys and Nextflow's per-stage slices rely on STAGE_SECTIONS."""
    import bonemet._stages as stages_mod
    from bonemet._stages import STAGE_SECTIONS

    tree = ast.parse(Path(stages_mod.__file__).read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for stage, declared in STAGE_SECTIONS.items():
        reads = _config_reads(funcs[stage])
        # helpers the stage calls with cfg (write_tables from report)
        for n in ast.walk(funcs[stage]):
            if (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id in funcs
                and any(isinstance(a, ast.Name) and a.id == "cfg" for a in n.args)
            ):
                reads |= _config_reads(funcs[n.func.id])
        assert reads, stage
        for key in reads:
            covered = any(d == "" or key == d or key.startswith(d + ".") for d in declared)
            assert covered, f"stage {stage!r} reads cfg.{key} but STAGE_SECTIONS lacks it"


def test_stage_slices_load_back_with_the_stage_values(tmp_path) -> None:
    from bonemet._stages import STAGE_SECTIONS, stage_config

    cfg = load_config(overrides={"qc": {"min_counts": 321}, "cluster": {"resolution": 0.7}})
    cfg_dict = cfg.to_dict()
    for stage in STAGE_SECTIONS:
        back = load_config(stage_config(cfg, stage)).to_dict()
        for dotted in STAGE_SECTIONS[stage]:
            want, got = cfg_dict, back
            for part in filter(None, dotted.split(".")):
                want, got = want[part], got[part]
            assert got == want, (stage, dotted)
    # the qc slice carries qc values but not the cluster section (defaults there)
    qc = stage_config(cfg, "qc")
    assert qc["qc"]["min_counts"] == 321 and "cluster" not in qc
    assert stage_config(cfg, "report") == cfg_dict
    with pytest.raises(ConfigError, match="unknown stage"):
        stage_config(cfg, "plot")


def test_cli_config_writes_stage_slices(tmp_path) -> None:
    from bonemet.cli import main

    rc = main(
        [
            "config",
            "--output",
            str(tmp_path / "config.yaml"),
            "--stage-dir",
            str(tmp_path / "stages"),
            "--set",
            "report.dpi=150",
        ]
    )
    assert rc == 0
    names = sorted(p.stem for p in (tmp_path / "stages").glob("*.yaml"))
    assert names == sorted(
        [
            "ingest",
            "qc",
            "merge",
            "integrate",
            "cluster",
            "annotate",
            "score",
            "compare",
            "ligrec",
            "report",
        ]
    )
    integ = yaml.safe_load((tmp_path / "stages" / "integrate.yaml").read_text())
    assert "report" not in integ and integ["integrate"]["method"] == "scvi"
    rep = yaml.safe_load((tmp_path / "stages" / "report.yaml").read_text())
    assert rep["report"]["dpi"] == 150


def test_replacing_a_model_reruns_annotate_only(tmp_path) -> None:
    """A new model file at the same path changes the annotate key (and later ones) only."""
    from bonemet.runner import Runner

    (tmp_path / "x.h5ad").write_bytes(b"counts")
    model = tmp_path / "ref" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights v1")
    cfg = {
        "input": {"path": str(tmp_path / "x.h5ad")},
        "output": {"dir": str(tmp_path / "out")},
        "annotate": {"scanvi_reference": str(model.parent)},
    }
    before = Runner(cfg)._keys()
    model.write_bytes(b"weights v2")
    after = Runner(cfg)._keys()
    changed = [s for s in before if before[s] != after[s]]
    assert changed == ["annotate", "score", "compare", "ligrec", "report"], changed
    # no model configured: keys do not depend on model files at all
    plain = {**cfg, "annotate": {}}
    assert Runner(plain)._keys()["cluster"] == before["cluster"]
