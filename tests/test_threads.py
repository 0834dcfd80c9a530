"""numpy's OpenBLAS starts no idle server threads in sceneclip's own processes (see core/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from sceneclip.core.threads import quiet_blas_threads

COUNT = "import os, sys; print(len(os.listdir('/proc/self/task')), os.environ.get('OPENBLAS_NUM_THREADS'))"


def _threads_after(prelude: str, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | (extra_env or {})
    out = subprocess.run([sys.executable, "-c", f"{prelude}; import numpy; {COUNT}"], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    return int(out[0]), out[1]


def test_entry_points_start_numpy_without_blas_server_threads() -> None:
    bare, _ = _threads_after("pass")
    for entry in ("import sceneclip.aws.handler", "import sceneclip.cli.main"):
        threads, setting = _threads_after(entry)
        assert setting == "1", entry
        assert threads == 1, f"{entry}: {threads} threads after numpy's import (numpy alone: {bare})"


def test_an_explicit_setting_is_kept() -> None:
    env = {"OPENBLAS_NUM_THREADS": "4"}
    quiet_blas_threads(env)
    assert env == {"OPENBLAS_NUM_THREADS": "4"}
    env = {}
    quiet_blas_threads(env)
    assert env == {"OPENBLAS_NUM_THREADS": "1"}
