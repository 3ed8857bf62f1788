"""Curated gene sets (``signatures/*.yaml``): schema, loading and species-aware matching.

Every file holds one gene set::

    name: ferroptosis_kegg          # file stem, [a-z0-9_]+
    kind: programme                 # lineage_marker | population_marker | programme
    version: "2025.1"
    description: one line
    source: "KEGG hsa04216 via Enrichr KEGG_2021_Human"   # DOI / PMID / database + release
    notes: "proxy: ..."             # caveats; required when a list is a proxy
    human: [GENE, ...]              # programme: the genes
    mouse: [Gene, ...]
    # markers instead use signed lists:
    target: "Monocyte/Macrophage"   # the cell_type (lineage) or population it marks
    positive: {human: [...], mouse: [...]}
    negative: {human: [...], mouse: [...]}
    missing: {mouse: "why the mouse list is empty"}   # explain any absent species
    # a lineage_discriminator separates two lineages that share a programme (T vs NK):
    #   target: "T cell"; versus: "NK cell"; positive: the target's discriminating genes;
    #   negative: the other lineage's; shared: the programme both carry (optional);
    #   lineage_sets: overlapping | distinct (default overlapping)

Matching is case-robust: mouse data whose symbols are upper-cased still match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ConfigError
from ._resources import signatures_dir

__all__ = [
    "GeneSet",
    "load_gene_sets",
    "load_gene_set_file",
    "match_genes",
    "Species",
]

Species = Literal["human", "mouse"]
Kind = Literal["lineage_marker", "population_marker", "programme", "lineage_discriminator"]


class SpeciesLists(BaseModel):
    model_config = ConfigDict(extra="forbid")
    human: list[str] = Field(default_factory=list)
    mouse: list[str] = Field(default_factory=list)


class GeneSet(BaseModel):
    """One curated gene set (see the module docstring for the file format)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Kind
    version: str
    description: str = ""
    source: str = Field(min_length=3)
    notes: str = ""
    target: str | None = None
    human: list[str] = Field(default_factory=list)
    mouse: list[str] = Field(default_factory=list)
    positive: SpeciesLists | None = None
    negative: SpeciesLists | None = None
    missing: dict[Species, str] = Field(default_factory=dict)
    versus: str | None = None  # lineage_discriminator: the lineage the target is told from
    shared: SpeciesLists | None = None  # lineage_discriminator: programme both lineages carry
    # lineage_discriminator: whether the two lineage sets overlap (carry the shared
    # programme: T vs NK, the default) or are distinct (DC vs monocyte), see
    # bonemet.tl._annotate_discriminate
    lineage_sets: Literal["overlapping", "distinct"] | None = None

    @model_validator(mode="after")
    def _check(self) -> GeneSet:
        problems = []
        if self.kind == "programme":
            if self.positive is not None or self.negative is not None:
                problems.append("a programme uses human/mouse lists, not positive/negative")
            lists = {"human": self.human, "mouse": self.mouse}
        else:
            if self.positive is None:
                problems.append(f"a {self.kind} needs positive: {{human: [...], mouse: [...]}}")
            if self.target is None:
                problems.append(f"a {self.kind} needs target: the cell type or population it marks")
            if self.human or self.mouse:
                problems.append("markers use positive/negative lists, not top-level human/mouse")
            if self.kind == "lineage_discriminator" and (
                self.versus is None or self.negative is None
            ):
                problems.append(
                    "a lineage_discriminator needs versus: (the other lineage) and negative: "
                    "(that lineage's discriminating genes)"
                )
            lists = {
                "human": self.positive.human if self.positive else [],
                "mouse": self.positive.mouse if self.positive else [],
            }
        if self.kind != "lineage_discriminator" and (
            self.versus is not None or self.shared is not None or self.lineage_sets is not None
        ):
            problems.append("versus/shared/lineage_sets belong to a lineage_discriminator only")
        for sp, genes in lists.items():
            if not genes and sp not in self.missing:
                problems.append(f"the {sp} list is empty and missing.{sp} does not explain why")
            dup = {g for g in genes if genes.count(g) > 1}
            if dup:
                problems.append(f"duplicate {sp} genes: {sorted(dup)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def genes(
        self,
        species: Species,
        *,
        sign: Literal["positive", "negative", "shared"] = "positive",
    ) -> list[str]:
        """The gene symbols of this set for ``species`` (positive, negative or shared markers)."""
        if self.kind == "programme":
            if sign != "positive":
                return []
            return list(getattr(self, species))
        lists = {"positive": self.positive, "negative": self.negative, "shared": self.shared}[sign]
        return list(getattr(lists, species)) if lists is not None else []


def load_gene_set_file(path: str | Path) -> GeneSet:
    """Load and validate one gene-set YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read gene-set file {str(p)!r}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"gene-set file {str(p)!r} must hold a mapping")
    try:
        gs = GeneSet.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors()
        )
        raise ConfigError(f"gene-set file {str(p)!r} is invalid: {msgs}") from None
    if gs.name != p.stem:
        raise ConfigError(
            f"gene-set file {str(p)!r}: name {gs.name!r} must equal the file stem {p.stem!r}"
        )
    return gs


@lru_cache(maxsize=8)
def _load_dir(directory: str) -> dict[str, GeneSet]:
    d = Path(directory)
    files = sorted(d.glob("*.yaml"))
    if not files:
        raise ConfigError(f"no gene-set files (*.yaml) in {str(d)!r}")
    return {gs.name: gs for gs in map(load_gene_set_file, files)}


def load_gene_sets(
    kind: Kind | Iterable[Kind] | None = None, *, directory: str | Path | None = None
) -> dict[str, GeneSet]:
    """Load the curated gene sets, optionally only those of ``kind``.

    Parameters
    ----------
    kind
        ``"lineage_marker"``, ``"population_marker"``, ``"programme"``, several, or all.
    directory
        A folder of gene-set YAML files; default the packaged ``signatures/``.
    """
    sets = _load_dir(str(Path(directory or signatures_dir()).resolve()))
    if kind is None:
        return dict(sets)
    kinds = {kind} if isinstance(kind, str) else set(kind)
    return {k: v for k, v in sets.items() if v.kind in kinds}


_MOUSE_MT = re.compile(r"^mt-", re.IGNORECASE)


def match_genes(genes: Sequence[str], var_names: Sequence[str]) -> tuple[list[str], float]:
    """Match gene symbols to ``var_names`` case-insensitively.

    Returns the matched names as spelled in ``var_names`` (order of ``genes``, no
    duplicates) and the fraction of ``genes`` found. An exact match wins over a
    case-insensitive one, so ``Hbb-bs`` matches ``HBB-BS`` in upper-cased mouse data.
    """
    if not genes:
        return [], 0.0
    exact = set(map(str, var_names))
    upper: dict[str, str] = {}
    for v in map(str, var_names):
        upper.setdefault(v.upper(), v)
    out: list[str] = []
    seen: set[str] = set()
    found = 0
    for g in genes:
        hit = g if g in exact else upper.get(g.upper())
        if hit is not None:
            found += 1
            if hit not in seen:
                seen.add(hit)
                out.append(hit)
    return out, found / len(genes)
