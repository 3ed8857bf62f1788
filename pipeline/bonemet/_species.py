"""The species of a data set: one rule, used by every stage.

:func:`resolve_species` is the one place where ``species="auto"`` is decided:

1. an explicit ``"human"`` or ``"mouse"`` wins (and is checked against the symbols: a
   declared species that the gene names contradict is warned about, because the mito and
   haemoglobin genes of the other species are never found);
2. else the species recorded in ``uns["bonemet"]["species"]`` by the reader;
3. else :func:`detect_species` on the gene names (case-robust: upper-cased mouse data is
   recognised by genes that exist in mouse only).

This module is a leaf: it imports nothing of bonemet but errors and logging.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from ._errors import InputError
from ._logging import logger

__all__ = ["Species", "detect_species", "resolve_species", "species_contradiction"]

Species = Literal["human", "mouse"]

# symbols that exist in mouse only (upper-cased for case-robust matching)
_MOUSE_ONLY = {
    g.upper()
    for g in """Hbb-bs Hbb-bt Hbb-b1 Hbb-b2 Hbb-y Hba-a1 Hba-a2 Hba-x Chil3 Chil4 Chil1 Ly6c1 Ly6c2 Ly6g
    Ly6a Klrb1c Cd200r3 Mcpt8 Mcpt4 Ear2 Ear1 Ear6 H2-Ab1 H2-Aa H2-Eb1 H2-K1 H2-D1 H2-Q7 H2-T23
    Lyz1 Lyz2 Retnla Retnlg Ngp Wfdc21 Klra8 Klrb1b Ifi27l2a Ccl9 Ccl6 Fcgr4 Pira2 Cd209a Gzmc
    Gzmd Gzme Clec4n Sirpb1a""".split()
}
# symbols that exist in human only (the mouse orthologue is named differently or absent)
_HUMAN_ONLY = {
    g.upper()
    for g in """FCGR3A FCGR3B FCGR2A CD1A CD1B CD1C CD1E CCL3L1 CCL3L3 CCL4L2 MT2A MT1X MT1G MT1E MT1F
    MT1M CEACAM8 CEACAM6 S100A12 IGLL5 HBG1 HBG2 CLEC4C LILRA4 XCL2""".split()
}
# Gm12345 (not human GM140), RIKEN clones 1110002L01Rik / A430005L14Rik (not GRIK3), H2-Ab1
_MOUSE_PATTERN = re.compile(
    r"^(GM\d{4,}|(?=[0-9A-Z]*\d)[0-9A-Z]{6,}RIK\d?|H2-[A-Z]{1,2}\d*[A-Z]?\d*)$", re.IGNORECASE
)
_HUMAN_PATTERN = re.compile(
    r"^(HLA-[A-Z0-9]+|KIR[23]D[LS]\d.*|LILR[AB]\d|C\d{1,2}ORF\d+|LINC\d{4,}|RP11-\d+[A-Z]\d+\.\d+|CT[ABCD]-\d+[A-Z]\d+\.\d+)$",
    re.IGNORECASE,
)


def detect_species(var_names: Sequence[str] | pd.Index) -> Literal["human", "mouse"]:
    """Detect whether gene symbols are human or mouse.

    Evidence used: Ensembl id prefixes (``ENSG``/``ENSMUSG``), mitochondrial prefixes
    (``MT-`` vs ``mt-``), the case pattern of symbols (``CD14`` vs ``Cd14``, ``RPL13`` vs
    ``Rpl13``), and, for upper-cased data, genes that exist in only one species (mouse:
    ``Hbb-bs``, ``Chil3``, ``Ly6c2``, ``Ly6g``, ``Klrb1c``, ``Cd200r3``, ``Mcpt8``, ``Ear2``,
    ``H2-Ab1``, ``Gm*``, ``*Rik``…; human: ``HLA-*``, ``FCGR3A``, ``C*orf*``, ``LINC*``…).

    Raises
    ------
    InputError
        If neither species can be decided: pass ``species="human"`` or ``"mouse"``.
    """
    names = [str(v).strip() for v in var_names]
    names = [n for n in names if n and n.lower() not in ("nan", "none")]
    n = len(names)
    if n == 0:
        raise InputError(
            "cannot detect the species: there are no gene names; pass species='human' or 'mouse'"
        )
    ens_h = sum(1 for s in names if re.match(r"^ENSG\d{6,}", s))
    ens_m = sum(1 for s in names if re.match(r"^ENSMUSG\d{6,}", s))
    if ens_h + ens_m > 0.5 * n and ens_h != ens_m:
        return "human" if ens_h > ens_m else "mouse"
    mt_h = sum(1 for s in names if s.startswith("MT-"))
    mt_m = sum(1 for s in names if s.startswith("mt-"))
    rib_h = sum(1 for s in names if re.match(r"^RP[LS]\d+[A-Z]?\d*$", s))
    rib_m = sum(1 for s in names if re.match(r"^Rp[ls]\d+[a-z]?\d*$", s))
    upper = [s.upper() for s in names]
    mouse_hits = len({u for u in upper if u in _MOUSE_ONLY}) + sum(
        1 for u in upper if _MOUSE_PATTERN.match(u)
    )
    human_hits = len({u for u in upper if u in _HUMAN_ONLY}) + sum(
        1 for u in upper if _HUMAN_PATTERN.match(u)
    )
    # case pattern among symbol-like names (skip ids and human '...orf...' names)
    symbolic = [
        s
        for s in names
        if re.search(r"[A-Za-z]{2}", s) and not re.match(r"^ENS", s) and "orf" not in s
    ]
    n_lower = sum(
        1 for s in symbolic if re.match(r"^[A-Z][a-z0-9]", s) and any(c.islower() for c in s)
    )
    n_upper = sum(1 for s in symbolic if not any(c.islower() for c in s))
    tot = max(len(symbolic), 1)
    frac_title, frac_upper = n_lower / tot, n_upper / tot
    logger.debug(
        "species evidence: MT- %d, mt- %d, RPL/RPS %d, Rpl/Rps %d, mouse-only %d, human-only %d, "
        "title-case %.2f, upper-case %.2f",
        mt_h,
        mt_m,
        rib_h,
        rib_m,
        mouse_hits,
        human_hits,
        frac_title,
        frac_upper,
    )
    if frac_title >= 0.5:
        if mt_m or rib_m or mouse_hits or frac_title >= 0.8 and len(symbolic) >= 200:
            return "mouse"
    elif frac_upper >= 0.5:
        # upper-case symbols: human, unless mouse-only genes say it is upper-cased mouse data
        if mouse_hits >= 2 and mouse_hits > human_hits:
            return "mouse"
        if human_hits or mt_h or rib_h or (len(symbolic) >= 50 and mouse_hits == 0):
            return "human"
    shown = ", ".join(names[:5])
    raise InputError(
        f"cannot detect the species from {n} gene names (e.g. {shown}): no clear human (MT-, CD14) or "
        "mouse (mt-, Cd14, Gm/Rik genes) pattern; pass species='human' or species='mouse' explicitly"
    )


def _names_of(data: Any) -> Sequence[str]:
    return list(data.var_names) if hasattr(data, "var_names") else list(data)


def species_contradiction(var_names: Sequence[str] | pd.Index, species: str) -> str | None:
    """Why the gene names contradict a declared ``species`` (``None`` when they do not).

    Only a confident detection counts: names whose species cannot be told contradict
    nothing.
    """
    try:
        found = detect_species(var_names)
    except InputError:
        return None
    if found == species:
        return None
    names = [str(v) for v in list(var_names)[:4]]
    return (
        f"species was declared {species!r}, but the gene names look {found} "
        f"(e.g. {', '.join(names)}): with the wrong species no mitochondrial or haemoglobin "
        f"gene is found and the {found} gene sets are not used; set species to {found!r} "
        "or 'auto'"
    )


def resolve_species(data: Any, species: str = "auto", *, strict: bool = True) -> Species | None:
    """The species of ``data`` (an AnnData or a list of gene names), by the module's rule.

    Parameters
    ----------
    data
        An AnnData (its recorded ``uns["bonemet"]["species"]`` is used before the gene
        names) or a sequence of gene names.
    species
        ``"auto"``, ``"human"`` or ``"mouse"``.
    strict
        When ``"auto"`` cannot be decided: raise (default), or return ``None`` (QC then
        matches mitochondrial genes in any case).

    Raises
    ------
    InputError
        For another value of ``species``, or when ``"auto"`` cannot be decided and
        ``strict``.
    """
    if species in ("human", "mouse"):
        return species  # type: ignore[return-value]
    if species != "auto":
        raise InputError(f"species must be 'auto', 'human' or 'mouse', not {species!r}")
    uns = getattr(data, "uns", None)
    if uns is not None:
        recorded = dict(uns.get("bonemet", {}) or {}).get("species")
        if recorded in ("human", "mouse"):
            return recorded
    try:
        return detect_species(_names_of(data))
    except InputError:
        if strict:
            raise
        return None
