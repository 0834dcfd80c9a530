"""Every trigger shape normalises to the same SceneRef; the samples in events/ are the fixtures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sceneclip.errors import PermanentError
from sceneclip.aws.events import (
    InvalidEventError,
    SceneRef,
    is_sqs_event,
    parse_event,
    parse_payload,
    parse_sqs_body,
)

EVENTS = Path(__file__).resolve().parents[1] / "events"
BUCKET = "sceneclip-input"
KEY = "scenes/rmnp/rmnp-rgb.tif"
VERSION = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
ETAG = "9b2cf535f27731c974343645a3985328-8"


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def refs_of(event: dict[str, Any]) -> list[SceneRef]:
    """What the handler will do: SQS batches record by record, everything else whole."""
    if is_sqs_event(event):
        return [ref for record in event["Records"] for ref in parse_sqs_body(record["body"])]
    return parse_event(event)


def s3_notification(key: str, event_name: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": event_name,
                "eventTime": "2026-11-20T14:03:07.512Z",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, **obj}},
            }
        ]
    }


# --- the samples --------------------------------------------------------------------------------------------
def test_every_sample_is_covered() -> None:
    expected = {
        "s3-put.json", "s3-put-encoded-key.json", "sqs-s3.json", "sqs-sns-s3.json",
        "eventbridge-object-created.json", "direct.json", "s3-test-event.json", "sqs-backfill.json",
        "sqs-mosaic.json",
    }
    assert expected <= {p.name for p in EVENTS.glob("*.json")}


def test_s3_put() -> None:
    (ref,) = refs_of(load("s3-put.json"))
    assert ref == SceneRef(
        bucket=BUCKET, key=KEY, version_id=VERSION, etag=ETAG, size=62914560,
        event_time="2026-11-20T14:03:07.512Z", origin="s3", sequencer="0065A1B2C3D4E5F601",
    )
    assert ref.uri == f"s3://{BUCKET}/{KEY}"
    assert ref.vsi_path == f"/vsis3/{BUCKET}/{KEY}"


def test_s3_put_encoded_key_is_decoded_plus_and_percent() -> None:
    event = load("s3-put-encoded-key.json")
    assert event["Records"][0]["s3"]["object"]["key"] == "scenes/rmnp/LC08+rmnp%2Brgb%281%29.tif"
    (ref,) = refs_of(event)
    # '+' is a space, '%2B' a real plus: unquote() alone would keep the '+', a naive replace would lose the plus.
    assert ref.key == "scenes/rmnp/LC08 rmnp+rgb(1).tif"
    assert ref.origin == "s3"


def test_sqs_batch_of_two_s3_notifications() -> None:
    event = load("sqs-s3.json")
    assert is_sqs_event(event)
    refs = refs_of(event)
    assert [(r.bucket, r.key, r.origin) for r in refs] == [
        (BUCKET, KEY, "s3"),
        (BUCKET, "scenes/rmnp/rmnp-dem.tif", "s3"),
    ]
    assert refs[0].version_id == VERSION and refs[1].version_id == "Ej7vYqZ4r6bN.oQ0f2pVw1uPz9kX3sT_"


def test_sqs_sns_s3() -> None:
    event = load("sqs-sns-s3.json")
    assert is_sqs_event(event)
    (ref,) = refs_of(event)
    assert (ref.bucket, ref.key, ref.version_id, ref.etag, ref.origin) == (BUCKET, KEY, VERSION, ETAG, "sns")


def test_eventbridge_object_created() -> None:
    (ref,) = refs_of(load("eventbridge-object-created.json"))
    assert ref == SceneRef(
        bucket=BUCKET, key=KEY, version_id=VERSION, etag=ETAG, size=62914560,
        event_time="2026-11-20T14:03:07Z", origin="eventbridge", sequencer="0065A1B2C3D4E5F601",
    )


def test_direct() -> None:
    assert refs_of(load("direct.json")) == [SceneRef(bucket=BUCKET, key=KEY, origin="direct")]


def test_s3_test_event_is_acknowledged_and_ignored() -> None:
    event = load("s3-test-event.json")
    assert parse_event(event) == []
    # S3 sends it to the SQS destination when the notification is configured: same answer through SQS.
    assert parse_sqs_body(json.dumps(event)) == []


def test_sqs_backfill_carries_region() -> None:
    (ref,) = refs_of(load("sqs-backfill.json"))
    assert ref == SceneRef(bucket=BUCKET, key=KEY, origin="direct", region="rmnp")


def test_sqs_mosaic_sample_is_a_mosaic_job_in_priority_order() -> None:
    from sceneclip.aws.mosaic_events import MosaicRef

    (ref,) = refs_of(load("sqs-mosaic.json"))
    assert isinstance(ref, MosaicRef) and ref.region == "span" and ref.group == "20140102"
    assert [s.key.rsplit("/", 1)[-1] for s in ref.sources] == ["LC08_L1TP_224078_20140102_B2.tif",
                                                                 "LC08_L1TP_224077_20140102_B2.tif"]
    assert all(s.bucket == BUCKET and s.etag and s.version_id is None for s in ref.sources)
    assert ref.uri == "mosaic://20140102"


def test_sqs_md5_of_body_matches() -> None:
    """The samples are realistic enough that SQS's own checksum holds (keeps hand edits honest)."""
    import hashlib

    for name in ("sqs-s3.json", "sqs-sns-s3.json", "sqs-backfill.json", "sqs-mosaic.json"):
        for record in load(name)["Records"]:
            assert hashlib.md5(record["body"].encode()).hexdigest() == record["md5OfBody"], name


# --- shapes and edge cases ----------------------------------------------------------------------------------
def test_object_removed_and_other_events_are_ignored() -> None:
    assert parse_payload(s3_notification(KEY, "ObjectRemoved:Delete")) == []
    assert parse_payload(s3_notification(KEY, "ObjectRestore:Completed")) == []
    mixed = s3_notification(KEY, "ObjectRemoved:Delete")
    mixed["Records"] += s3_notification("scenes/a.tif", "ObjectCreated:CompleteMultipartUpload")["Records"]
    assert [r.key for r in parse_payload(mixed)] == ["scenes/a.tif"]


def test_eventbridge_other_detail_types_are_ignored() -> None:
    event = load("eventbridge-object-created.json")
    event["detail-type"] = "Object Deleted"
    assert parse_event(event) == []


def test_eventbridge_key_is_decoded() -> None:
    event = load("eventbridge-object-created.json")
    event["detail"]["object"]["key"] = "scenes/rmnp/LC08+rmnp%2Brgb%281%29.tif"
    assert parse_event(event)[0].key == "scenes/rmnp/LC08 rmnp+rgb(1).tif"


def test_direct_key_is_literal() -> None:
    (ref,) = parse_payload({"bucket": BUCKET, "key": "scenes/a+b%28c%29.tif"})
    assert ref.key == "scenes/a+b%28c%29.tif"


def test_direct_accepts_both_spellings_and_force() -> None:
    a = parse_payload({"bucket": BUCKET, "key": KEY, "versionId": "v1", "eTag": '"abc"', "force": True})
    b = parse_payload({"bucket": BUCKET, "key": KEY, "version_id": "v1", "etag": "abc", "force": True})
    assert a == b == [SceneRef(bucket=BUCKET, key=KEY, version_id="v1", etag="abc", force=True)]


def test_etag_quotes_are_stripped_everywhere() -> None:
    (ref,) = parse_payload(s3_notification(KEY, eTag='"d41d8cd98f00b204e9800998ecf8427e"'))
    assert ref.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert SceneRef(bucket=BUCKET, key=KEY, etag='"x-2"').etag == "x-2"


def test_unversioned_bucket_gives_no_version() -> None:
    (ref,) = parse_payload(s3_notification(KEY, versionId=None, size=10))
    assert ref.version_id is None and ref.size == 10
    (ref,) = parse_payload(s3_notification(KEY))
    assert ref.version_id is None and ref.etag is None and ref.size is None


def test_sns_envelope_and_sns_lambda_event() -> None:
    inner = json.dumps(s3_notification("scenes/x+y.tif"))
    envelope = {"Type": "Notification", "MessageId": "m-1", "Message": inner}
    sns_event = {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": envelope}]}
    expected = [SceneRef(bucket=BUCKET, key="scenes/x y.tif", event_time="2026-11-20T14:03:07.512Z", origin="sns")]
    assert parse_payload(envelope) == expected
    assert parse_event(sns_event) == expected
    assert parse_sqs_body(json.dumps(envelope)) == expected


def test_sns_subscription_confirmation_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="SubscriptionConfirmation"):
        parse_payload({"Type": "SubscriptionConfirmation", "Message": "You have chosen to subscribe"})


def test_round_trip_of_to_message() -> None:
    ref = SceneRef(bucket=BUCKET, key="scenes/a b+c.tif", version_id="v9", etag="e1", region="rmnp", force=True)
    message = ref.to_message()
    assert message == {"bucket": BUCKET, "key": "scenes/a b+c.tif", "version_id": "v9", "etag": "e1",
                       "region": "rmnp", "force": True}
    assert parse_payload(message) == [ref]
    assert parse_sqs_body(json.dumps(message)) == [ref]
    # Unset fields are left out, so the message is the minimal direct payload.
    assert SceneRef(bucket=BUCKET, key=KEY).to_message() == {"bucket": BUCKET, "key": KEY}


def test_round_trip_from_an_s3_event_keeps_the_job() -> None:
    (ref,) = refs_of(load("s3-put-encoded-key.json"))
    (back,) = parse_payload(json.loads(json.dumps(ref.to_message())))
    assert (back.bucket, back.key, back.version_id, back.etag) == (ref.bucket, ref.key, ref.version_id, ref.etag)
    assert back.origin == "direct"


def test_is_sqs_event() -> None:
    assert is_sqs_event(load("sqs-backfill.json"))
    assert not is_sqs_event(load("s3-put.json"))
    assert not is_sqs_event(load("direct.json"))
    assert not is_sqs_event({"Records": []})
    assert not is_sqs_event([])  # type: ignore[arg-type]


def test_parse_event_refuses_an_sqs_batch() -> None:
    with pytest.raises(InvalidEventError, match="parse_sqs_body"):
        parse_event(load("sqs-s3.json"))


# --- garbage ------------------------------------------------------------------------------------------------
def test_unknown_shape_names_the_keys_it_got() -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_payload({"hello": 1, "world": {"secret": "do-not-log"}})
    message = str(info.value)
    assert "unrecognised event shape" in message and "'hello'" in message and "'world'" in message
    assert "do-not-log" not in message  # keys, never values
    assert isinstance(info.value, PermanentError) and info.value.permanent


def test_message_is_truncated() -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_payload({f"field_{i:03d}": i for i in range(200)})
    assert len(str(info.value)) <= 250


def test_sqs_body_not_json() -> None:
    with pytest.raises(InvalidEventError, match="not JSON"):
        parse_sqs_body("bucket=sceneclip-input&key=x.tif")
    with pytest.raises(InvalidEventError, match="JSON object"):
        parse_sqs_body("[1, 2]")


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"bucket": "", "key": KEY}, "bucket"),
        ({"bucket": BUCKET, "key": 7}, "key"),
        ({"bucket": BUCKET, "key": KEY, "force": "yes"}, "force"),
        ({"bucket": BUCKET, "key": KEY, "region": ""}, "region"),
        ({"Records": "nope"}, "Records"),
        ({"Records": [{"eventSource": "aws:dynamodb"}]}, "aws:dynamodb"),
        ({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}, "'s3'"),
        ({"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": BUCKET}}}, "object"),
    ],
)
def test_malformed_known_shapes(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidEventError, match=match):
        parse_payload(payload)


def test_samples_are_not_mutated_by_parsing() -> None:
    event = load("sqs-sns-s3.json")
    before = copy.deepcopy(event)
    refs_of(event)
    assert event == before
