"""SnapStart: INIT builds what the first request would, and a restore gets fresh clients and seeds.

Each case runs in a fresh interpreter with Lambda's ``AWS_LAMBDA_INITIALIZATION_TYPE``. The test plays the
runtime's part with AWS's own ``snapshot_restore_py`` (the library the Python managed runtime ships): it runs
the registered after-restore hooks the way the runtime does, after changing the credentials as Lambda does
between snapshot and restore.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.test_coldstart import FORBIDDEN, _lambda_env

SCRIPT = textwrap.dedent(
    r"""
    import json, os, random, socket, sys

    connects = []

    def refuse(self, address, *args, **kwargs):
        connects.append(str(address))
        raise OSError("network access during INIT")

    socket.socket.connect = refuse
    import sceneclip.aws.handler as handler

    app = handler._WARM_START_CACHE.get("app")
    out = {
        "built_in_init": app is not None,
        "heavy_loaded": sorted(m for m in ("rasterio", "numpy", "shapely", "sceneclip.core.clip",
                                           "sceneclip.core.cogcheck", "sceneclip.aws.pipeline") if m in sys.modules),
        "tooling": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(",")),
        "connects": connects,
    }
    if app is not None and sys.argv[2] == "restore":
        import snapshot_restore_py

        key_before = app.s3._request_signer._credentials.access_key
        random.seed(1234)  # what every container restored from one snapshot would share
        shared = random.random()
        random.seed(1234)
        os.environ["AWS_ACCESS_KEY_ID"] = "restored-key"  # Lambda's credentials after restore
        for func, args, kwargs in snapshot_restore_py.get_after_restore():
            func(*args, **kwargs)
        new = handler._WARM_START_CACHE.get("app")
        out.update({
            "hooks": len(snapshot_restore_py.get_after_restore()),
            "key_before": key_before,
            "key_after": new.s3._request_signer._credentials.access_key,
            "new_app": new is not app and handler.get_app() is new,
            "reseeded": random.random() != shared,
        })
    print(json.dumps(out))
    """
)


def _run(tmp_path, init_type: str, mode: str) -> dict:
    env = _lambda_env(tmp_path, tracing=True)
    env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init_type
    proc = subprocess.run([sys.executable, "-I", "-c", SCRIPT, ",".join(FORBIDDEN), mode], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, f"INIT failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_snapstart_init_builds_the_app_and_restore_refreshes_credentials_and_seed(tmp_path):
    out = _run(tmp_path, "snap-start", "restore")
    assert out["built_in_init"], "SnapStart INIT must build the app before the snapshot"
    assert out["heavy_loaded"] == sorted(["rasterio", "numpy", "shapely", "sceneclip.core.clip",
                                          "sceneclip.core.cogcheck", "sceneclip.aws.pipeline"])
    assert out["tooling"] == [] and out["connects"] == []
    assert out["hooks"] == 1
    assert out["key_before"] == "testing" and out["key_after"] == "restored-key"
    assert out["new_app"] and out["reseeded"]


@pytest.mark.parametrize("init_type,prewarmed", [("provisioned-concurrency", True), ("on-demand", False)])
def test_init_types(tmp_path, init_type, prewarmed):
    out = _run(tmp_path, init_type, "init")
    assert out["built_in_init"] is prewarmed
    assert ("rasterio" in out["heavy_loaded"]) is prewarmed  # on-demand INIT stays light
    assert out["tooling"] == [] and out["connects"] == []
