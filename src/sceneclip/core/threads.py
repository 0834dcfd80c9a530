"""Process-wide thread settings that a library reads once, when it loads: set them before it does.

numpy's bundled OpenBLAS starts one server thread per extra CPU when numpy is imported, and those threads
spin waiting for work before they go to sleep: about 100 ms of CPU per process on this project's machines
(``perf``: ``blas_thread_server``), for nothing, since sceneclip does no linear algebra. On Lambda, where a
2048 MB function has 1.16 vCPUs of quota over two visible CPUs, the spinning thread spends the INIT phase's
quota: handler import + set-up measured 557 → 495 ms (median of 6) in a cgroup with that quota. GDAL's own
threads (``NUM_THREADS``, ``GDAL_NUM_THREADS``) are unaffected.

Only entry points call this (the Lambda handler module, the CLI): a program that imports sceneclip as a
library keeps whatever BLAS threading it chose.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS",)


def quiet_blas_threads(environ: MutableMapping[str, str] | None = None) -> None:
    """One BLAS thread unless the environment already says otherwise (effective only before numpy loads)."""
    env = os.environ if environ is None else environ
    for name in BLAS_THREAD_VARIABLES:
        env.setdefault(name, "1")
