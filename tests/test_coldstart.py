"""Cold start: importing the handler pulls in no tooling, and the heavy objects are built once per container.

Each check runs in a fresh interpreter (a cold start is a new process; this test session has long since imported
geopandas & co.). No timing assertions: ``make bench-coldstart`` reports the figures as ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

FORBIDDEN = ("geopandas", "pandas", "pyogrio", "pyproj", "moto")

SCRIPT = textwrap.dedent(
    r"""
    import json, socket, sys

    connects = []

    def refuse(self, address, *args, **kwargs):  # get_app() builds clients; it must not talk to AWS
        connects.append(str(address))
        raise OSError("network access during cold start")

    socket.socket.connect = refuse
    forbidden = tuple(sys.argv[1].split(","))
    loaded = lambda: sorted(m for m in sys.modules if m.split(".")[0] in forbidden)

    import sceneclip.aws.handler as handler

    after_import = loaded()
    first = handler.get_app()
    second = handler.get_app()
    print(json.dumps({
        "after_import": after_import,
        "after_init": loaded(),
        "same_app": first is second,
        "cached": handler._WARM_START_CACHE.get("app") is first,
        "pipeline_type": type(first.pipeline).__name__,
        "idempotency_cached": first.idempotency is not None,
        "connects": connects,
    }))
    """
)


def _lambda_env(tmp_path, *, tracing: bool) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens; any request would fail loudly anyway
        "AWS_LAMBDA_FUNCTION_NAME": "sceneclip", "POWERTOOLS_SERVICE_NAME": "sceneclip",
        "POWERTOOLS_METRICS_NAMESPACE": "sceneclip",
        "SCENECLIP_OUTPUT_BUCKET": "out-bucket", "SCENECLIP_OUTPUT_PREFIX": "clipped/",
        "SCENECLIP_BOUNDARIES": "s3://boundary-bucket/store", "SCENECLIP_RECORDS_TABLE": "records",
        "SCENECLIP_IDEMPOTENCY_TABLE": "idempotency",
    }
    if tracing:  # Tracer() enables itself (X-Ray SDK, patching) only inside Lambda: template has Tracing: Active
        env["LAMBDA_TASK_ROOT"] = str(tmp_path)
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


@pytest.mark.parametrize("tracing", [True, False], ids=["tracing-active", "tracing-disabled"])
def test_handler_import_is_light_and_app_is_reused(tmp_path, tracing):
    proc = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, ",".join(FORBIDDEN)],
        capture_output=True, text=True, cwd=tmp_path, env=_lambda_env(tmp_path, tracing=tracing), timeout=120,
    )
    assert proc.returncode == 0, f"cold start failed:\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["after_import"] == [], f"importing sceneclip.aws.handler imported tooling: {out['after_import']}"
    assert out["after_init"] == [], f"get_app() imported tooling: {out['after_init']}"
    assert out["connects"] == [], f"get_app() opened connections: {out['connects']}"
    assert out["same_app"] and out["cached"], "get_app() must build once and reuse the app on warm invocations"
    assert out["pipeline_type"] == "ScenePipeline"
    assert out["idempotency_cached"], "the app keeps the idempotency config for register_lambda_context"
