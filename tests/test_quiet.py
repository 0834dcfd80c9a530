"""The demo's noise, fixed at its causes: every invocation has a metric to publish, and quick-looks are
PNGs that GDAL never sees (tested in test_report.py)."""

from __future__ import annotations

import json
import warnings

from .test_pipeline_e2e import invoke, sample_event, stack  # noqa: F401


def _emf_names(out: str) -> set[str]:
    blobs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "_aws" in line]
    return {m["Name"] for b in blobs for d in b["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def test_an_event_with_nothing_to_clip_publishes_a_metric_and_no_warning(stack, capsys):
    """s3:TestEvent used to flush an empty metric set: Powertools' "No application metrics to publish"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resp = invoke(sample_event("s3-test-event.json", stack))
        unsupported = invoke({"hello": "world"})
    assert resp == {"statusCode": 200, "results": []} and unsupported["statusCode"] == 400
    assert [str(w.message) for w in caught if "metrics" in str(w.message).lower()] == []
    assert {"EventsIgnored", "InvalidEvents"} <= _emf_names(capsys.readouterr().out)


def test_a_transient_failure_is_counted(stack, capsys):
    """A scene that raises for retry still leaves a metric (its records never reach _emit_metrics)."""
    import pytest

    from sceneclip.aws import handler

    app = handler.get_app().pipeline

    def unavailable(*_a, **_k):
        from sceneclip.errors import SourceUnavailableError

        raise SourceUnavailableError("503 from S3 (test)")

    app._head = unavailable
    with pytest.raises(Exception, match="503"):
        invoke({"bucket": stack["names"]["InputBucket"], "key": "scenes/x.tif"})
    assert "TransientFailures" in _emf_names(capsys.readouterr().out)
