"""Completion events end to end over moto's server: handler → record → SNS topic / EventBridge bus → SQS.

The function runs as in the other e2e tests (template resources, real GDAL reads over HTTP); the events are
read back from an SQS queue subscribed to the topic (SNS → SQS) or targeted by a rule (EventBridge → SQS),
the way a downstream consumer would see them.
"""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest

from sceneclip.aws import handler
from sceneclip.aws.completion import CompletionTarget, detail_type, event_detail
from sceneclip.aws.config import Settings
from sceneclip.aws.records_table import _from_dynamo
from sceneclip.core.records import BoundaryRef, VerificationRecord
from sceneclip.errors import ConfigError

from .test_pipeline_e2e import COUNTIES, SCENE_KEY, invoke, sample_event, stack, upload_scene  # noqa: F401
from .test_pipeline_e2e import records as table_items

ACCOUNT = "123456789012"


# --- pure parts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arn, kind", [
    (f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/clips", "eventbridge"),
    (f"arn:aws:events:eu-west-1:{ACCOUNT}:event-bus/default", "eventbridge"),
    (f"arn:aws:sns:us-east-1:{ACCOUNT}:clips-ready", "sns"),
    (f"arn:aws:sns:us-east-1:{ACCOUNT}:clips.fifo", "sns"),
])
def test_target_kinds(arn, kind):
    target = CompletionTarget.parse(arn)
    assert target.kind == kind and target.arn == arn


@pytest.mark.parametrize("arn", [
    "clips", f"arn:aws:sqs:us-east-1:{ACCOUNT}:q", f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r",
    f"arn:aws:sns:us-east-1:{ACCOUNT}:bad topic", "arn:aws:sns:us-east-1:12:t",
])
def test_bad_target_is_a_config_error_naming_the_variable(arn):
    with pytest.raises(ConfigError, match="SCENECLIP_COMPLETION_TARGET"):
        Settings.from_env({"SCENECLIP_OUTPUT_BUCKET": "b", "SCENECLIP_BOUNDARIES": "s3://b/s",
                           "SCENECLIP_RECORDS_TABLE": "t", "SCENECLIP_COMPLETION_TARGET": arn})


def test_empty_target_is_off():
    env = {"SCENECLIP_OUTPUT_BUCKET": "b", "SCENECLIP_BOUNDARIES": "s3://b/s", "SCENECLIP_RECORDS_TABLE": "t"}
    assert Settings.from_env(env).completion_target is None
    assert Settings.from_env({**env, "SCENECLIP_COMPLETION_TARGET": " "}).completion_target is None


def _record(status, **kw):
    return VerificationRecord(source="s3://in/scenes/a.tif", boundary=BoundaryRef("s3://in/store", "Grand", "h"),
                              status=status, **kw)


def test_detail_types_and_public_fields():
    assert detail_type(_record("ok")) == "Clip Succeeded"
    assert detail_type(_record("failed")) == "Clip Failed"
    assert detail_type(_record("skipped")) == "Clip Skipped"
    detail = event_detail(_record("ok", output="s3://out/clipped/Grand/a.tif", sha256="ab", bytes_fetched=10))
    assert detail["scene"] == "s3://in/scenes/a.tif" and detail["region"] == "Grand"
    assert detail["output"] == "s3://out/clipped/Grand/a.tif" and detail["bytes_fetched"] == 10
    assert "error" not in detail  # None fields are dropped, as in the records table


def test_a_presigned_url_never_leaves():
    signed = "https://in.s3.amazonaws.com/a.tif?versionId=1&X-Amz-Signature=abc&X-Amz-Credential=k"
    detail = event_detail(_record("failed", error=f"cannot read {signed}"))
    assert "X-Amz" not in json.dumps(detail)


# --- end to end over moto -----------------------------------------------------------------------------------
def records(stack):
    """The records table as plain JSON values (DynamoDB hands back Decimals)."""
    return [_from_dynamo(item) for item in table_items(stack)]


def _queue(sqs):
    url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _drain(sqs, url, expected, deadline_s=30.0):
    """Bodies from the queue until ``expected`` arrived or the (generous) deadline passed."""
    bodies, until = [], time.monotonic() + deadline_s
    while len(bodies) < expected and time.monotonic() < until:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in resp.get("Messages", []):
            bodies.append(json.loads(msg["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
    return bodies


@pytest.fixture
def sns_target(stack, monkeypatch):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"clips-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url, arn = _queue(sqs)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    monkeypatch.setenv("SCENECLIP_COMPLETION_TARGET", topic)
    handler._WARM_START_CACHE.clear()
    return {"sqs": sqs, "url": url, "arn": topic}


@pytest.fixture
def bus_target(stack, monkeypatch):
    events, sqs = boto3.client("events"), boto3.client("sqs")
    name = f"clips-{uuid.uuid4().hex[:8]}"
    bus = events.create_event_bus(Name=name)["EventBusArn"]
    url, arn = _queue(sqs)
    events.put_rule(Name=f"{name}-all", EventBusName=name, EventPattern=json.dumps({"source": ["sceneclip"]}))
    events.put_targets(Rule=f"{name}-all", EventBusName=name, Targets=[{"Id": "queue", "Arn": arn}])
    monkeypatch.setenv("SCENECLIP_COMPLETION_TARGET", bus)
    handler._WARM_START_CACHE.clear()
    return {"sqs": sqs, "url": url, "arn": bus}


def _assert_events_carry_the_records(stack, events):
    table = {r["region"]: r for r in records(stack)}
    assert sorted(e["detail"]["region"] for e in events) == sorted(table)
    for event in events:
        assert event["source"] == "sceneclip"
        rec, detail = table[event["detail"]["region"]], event["detail"]
        assert event["detail-type"] == {"ok": "Clip Succeeded", "failed": "Clip Failed"}[rec["status"]]
        for name in ("source", "status", "output", "sha256", "size_bytes", "bytes_fetched", "valid_fraction",
                     "source_etag", "source_version", "output_etag", "config_hash", "error_type", "error"):
            assert detail.get(name) == rec.get(name), name
        assert detail["boundary"] == rec["boundary"]
        assert "X-Amz-" not in json.dumps(event)


def test_sns_topic_to_sqs_subscription(stack, sns_target):
    version, etag = upload_scene(stack)
    resp = invoke(sample_event("s3-put.json", stack, version=version, etag=etag))
    assert sorted(r["region"] for r in resp["results"]) == COUNTIES
    bodies = _drain(sns_target["sqs"], sns_target["url"], expected=len(COUNTIES))
    assert len(bodies) == len(COUNTIES)
    assert all(b["TopicArn"] == sns_target["arn"] and b["Subject"] == "Clip Succeeded" for b in bodies)
    assert all(b["MessageAttributes"]["detail-type"]["Value"] == "Clip Succeeded" for b in bodies)
    _assert_events_carry_the_records(stack, [json.loads(b["Message"]) for b in bodies])


def test_eventbridge_rule_to_sqs_target(stack, bus_target):
    version, etag = upload_scene(stack)
    invoke({"bucket": stack["names"]["InputBucket"], "key": SCENE_KEY, "region": "Grand"})
    stack["s3"].put_object(Bucket=stack["names"]["InputBucket"], Key="scenes/broken.tif", Body=b"garbage")
    invoke({"bucket": stack["names"]["InputBucket"], "key": "scenes/broken.tif", "region": "Larimer"})
    events = _drain(bus_target["sqs"], bus_target["url"], expected=2)
    assert sorted(e["detail-type"] for e in events) == ["Clip Failed", "Clip Succeeded"]
    failed = next(e for e in events if e["detail-type"] == "Clip Failed")["detail"]
    assert failed["error_type"] == "RasterReadError" and failed["error"] and failed["transient"] is False
    by_scene = {r["scene"]: r for r in records(stack)}
    assert {e["detail"]["scene"] for e in events} == set(by_scene)
    for event in events:
        rec = by_scene[event["detail"]["scene"]]
        assert event["source"] == "sceneclip" and event["detail"]["status"] == rec["status"]
        assert event["detail"].get("output") == rec.get("output") and event["detail"]["region"] == rec["region"]


def test_duplicate_delivery_sends_no_second_event(stack, sns_target):
    """One event per record written: an idempotent replay writes no record, so it announces nothing."""
    upload_scene(stack)
    job = {"bucket": stack["names"]["InputBucket"], "key": SCENE_KEY, "region": "Grand"}
    invoke(job)
    invoke(job)
    assert len(_drain(sns_target["sqs"], sns_target["url"], expected=2, deadline_s=5)) == 1


def test_publish_failure_loses_no_record(stack, monkeypatch, capsys):
    """A topic that does not exist: the clip, its output and its record stand; the failure is logged and counted."""
    monkeypatch.setenv("SCENECLIP_COMPLETION_TARGET", f"arn:aws:sns:us-east-1:{ACCOUNT}:no-such-topic-{uuid.uuid4().hex[:6]}")
    handler._WARM_START_CACHE.clear()
    upload_scene(stack)
    resp = invoke({"bucket": stack["names"]["InputBucket"], "key": SCENE_KEY, "region": "Grand"})
    assert resp["statusCode"] == 200 and resp["results"][0]["status"] == "ok"
    (rec,) = records(stack)
    assert rec["status"] == "ok" and rec["output"]
    assert handler.get_app().pipeline.completion.failures == 1
    out = capsys.readouterr().out
    blobs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "_aws" in line]
    failures = [b for b in blobs if "CompletionEventFailures" in b]
    assert failures and failures[0]["Target"] == "sns"
