"""The typed config: defaults, overrides, and errors that list every problem."""

from __future__ import annotations

import pytest
import yaml

import bonemet as bm
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
        "qc:\n  max_pct_mito: -5\n  min_genez: 10\n"
        "integrate:\n  method: tsne\n"
        "clusterr: {}\n"
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
