"""`sceneclip invoke` runs the handler as `sam local invoke` would: template environment + env-vars file."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sceneclip.aws import handler
from sceneclip.cli.main import main
from sceneclip.tools.local import Resolver, function_spec, load_template, parameter_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_function_spec_reads_handler_and_environment_from_template():
    template = load_template(ROOT / "template.yaml")
    spec = function_spec(template, "ClipFunction", Resolver(parameter_defaults(template, {"OutputPrefix": "out/"})))
    assert spec.handler == "sceneclip.aws.handler.lambda_handler"
    env = spec.environment
    for name in ("SCENECLIP_OUTPUT_BUCKET", "SCENECLIP_OUTPUT_PREFIX", "SCENECLIP_BOUNDARIES", "SCENECLIP_REGION_PATTERN",
                 "SCENECLIP_RECORDS_TABLE", "SCENECLIP_IDEMPOTENCY_TABLE", "SCENECLIP_ALL_TOUCHED"):
        assert name in env
    assert env["SCENECLIP_OUTPUT_PREFIX"] == "out/" and env["SCENECLIP_ALL_TOUCHED"] == "false"
    assert env["SCENECLIP_OUTPUT_BUCKET"] == "<OutputBucket>"  # a resource: no local name unless env-vars give one


def test_invoke_without_env_vars_fails_naming_the_variable(tmp_path, monkeypatch):
    for name in ("SCENECLIP_OUTPUT_BUCKET", "SCENECLIP_BOUNDARIES", "SCENECLIP_RECORDS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    handler._WARM_START_CACHE.clear()
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(main, ["invoke", "ClipFunction", "-e", "events/direct.json"])
    assert res.exit_code == 1 and "SCENECLIP_OUTPUT_BUCKET is not set" in res.stderr
    handler._WARM_START_CACHE.clear()


def test_invoke_test_event_with_env_vars(tmp_path, monkeypatch, moto_endpoint):
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"ClipFunction": {
        "SCENECLIP_OUTPUT_BUCKET": "out", "SCENECLIP_BOUNDARIES": "s3://in/boundaries", "SCENECLIP_RECORDS_TABLE": "records",
        "SCENECLIP_IDEMPOTENCY_TABLE": "", "POWERTOOLS_TRACE_DISABLED": "true"}}))
    handler._WARM_START_CACHE.clear()
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(main, ["invoke", "ClipFunction", "-e", "events/s3-test-event.json", "--env-vars", str(env)])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == {"statusCode": 200, "results": []}
    handler._WARM_START_CACHE.clear()
