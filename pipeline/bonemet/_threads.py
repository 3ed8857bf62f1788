"""How many CPU threads bonemet's numerical libraries use: one setting for every stage.

``threads`` (the config key, ``--threads`` on the command line) caps BLAS/OpenMP
(numpy, scipy, scikit-learn through threadpoolctl), numba and torch. Unset, it is the
``BONEMET_THREADS`` environment variable (Nextflow's modules set it to ``task.cpus``), else
the cores this process may run on (its CPU affinity, which batch schedulers and
containers restrict). Two tasks on one node then do not oversubscribe its cores.

The thread count does not enter the resume keys: it changes speed, not the analysis
(floating-point reductions in torch and BLAS may differ in their last bits).

This module is a leaf: it imports nothing of bonemet.
"""

from __future__ import annotations

import os
import sys

__all__ = ["available_cores", "resolve_threads", "set_threads"]

_APPLIED: dict[str, object] = {}


def available_cores() -> int:
    """The cores this process may run on (CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$BONEMET_THREADS``, else :func:`available_cores`."""
    if threads:
        return int(threads)
    env = os.environ.get("BONEMET_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            from ._errors import ConfigError

            raise ConfigError(
                f"BONEMET_THREADS={env!r} is not a whole number: set it to the cores to use"
            ) from None
        if n >= 1:
            return n
    return available_cores()


def set_threads(threads: int | None = None) -> int:
    """Cap BLAS/OpenMP, numba and torch at ``resolve_threads(threads)``; return the count.

    Libraries imported later start with the cap too (their environment variables are set).
    """
    n = resolve_threads(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    _APPLIED["blas"] = threadpool_limits(limits=n)  # kept: the limits hold while referenced
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:  # torch imported later reads OMP_NUM_THREADS
        import torch

        torch.set_num_threads(n)
    _APPLIED["threads"] = n
    return n
