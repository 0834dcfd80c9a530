"""AWS Lambda entry point: wiring only (Powertools' documented handler pattern).

Every trigger — S3 notification, SQS (S3 notification, SNS-wrapped, backfill message), EventBridge, a
direct ``{"bucket", "key"}`` payload — is normalised to :class:`~sceneclip.aws.events.SceneRef` (a STAC Item
event to :class:`~sceneclip.aws.stac_events.ItemRef`) and handed to :class:`~sceneclip.aws.pipeline.ScenePipeline`. Heavy objects (clients, settings, the boundary store, the
idempotent clip) are created on first use as one :class:`App` kept in ``_WARM_START_CACHE`` for warm invocations.

Each scene is budgeted from ``context.get_remaining_time_in_millis()`` (:mod:`sceneclip.aws.deadline`): the
clip gives up a margin before the deadline with a transient ``DeadlineExceeded``, which raises through the
idempotent function (Powertools then deletes the INPROGRESS record) and fails only that message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sceneclip.core import netstats
from sceneclip.core.threads import quiet_blas_threads
from sceneclip.core.gdalenv import skip_indirection_drivers
from sceneclip.errors import OutputBusyError, SceneclipError
from sceneclip.aws.events import InvalidEventError, Ref, is_sqs_event, parse_event, parse_sqs_body
from sceneclip.aws import snapstart as _snapstart
from sceneclip.aws.deadline import deadline_from_context, margin_from_env

quiet_blas_threads()  # before numpy loads (in get_app): its idle BLAS threads would spin through INIT
netstats.enable()  # GDAL reads this once, before its first network access
skip_indirection_drivers()  # GDAL reads GDAL_SKIP once, when it registers its drivers (cold start)

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "sceneclip"))
tracer = Tracer(patch_modules=("botocore",))  # patch only what the function calls (saves ~110 imports)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "sceneclip"))
# A batch whose every message failed is still answered with batchItemFailures (each retried on its own, each
# already recorded) rather than by failing the invocation, which would hide the per-message outcome.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

_WARM_START_CACHE: dict[str, Any] = {}


@dataclass
class App:
    """What one container builds once: the pipeline and, when idempotency is on, its Powertools config (the
    handler registers each invocation's Lambda context on it, so in-progress locks expire with the function)."""

    pipeline: Any  # ScenePipeline (imported lazily: the handler module stays cheap to import)
    idempotency: Any = None  # IdempotencyConfig | None

    @property
    def s3(self) -> Any:
        return self.pipeline.s3


def get_app() -> App:
    """Settings, clients, store loader and pipeline, built once per container (fails naming the variable)."""
    app = _WARM_START_CACHE.get("app")
    if app is None:
        app = _build_app()
        _WARM_START_CACHE["app"] = app
    return app


def _build_app() -> App:
    import boto3
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from sceneclip.aws.config import Settings
    from sceneclip.aws.deadline import CappedClients, bookkeeping_config
    from sceneclip.aws.pipeline import ScenePipeline
    from sceneclip.aws.records_table import RecordStore
    from sceneclip.aws.store import get_store

    copy_config_to_registered_loggers(source_logger=logger, include={"sceneclip"})
    settings = Settings.from_env()
    _WARM_START_CACHE["deadline_margin_s"] = margin_from_env()
    s3_clients = CappedClients("s3")  # S3 calls get timeouts that fit the scene's deadline
    # One low-level client for the records and the idempotency table: short timeouts, as these calls run in
    # the margin kept before the deadline (the failed record, the lock release).
    dynamodb = boto3.client("dynamodb", config=bookkeeping_config())
    records = RecordStore(settings.records_table, client=dynamodb)
    wrap, config = _idempotency(settings, dynamodb)
    pipeline = ScenePipeline(
        settings, s3=s3_clients.for_deadline(None), records=records,
        store_loader=lambda s3: get_store(settings.boundaries, s3_client=s3),
        idempotent=wrap, completion=_completion(settings.completion_target), s3_for=s3_clients.for_deadline,
    )
    return App(pipeline=pipeline, idempotency=config)


def _completion(target: str | None) -> Any:
    """The completion publisher, or None; its module is imported only when a target is configured."""
    if not target:
        return None
    from sceneclip.aws.completion import publisher_from_target

    return publisher_from_target(target)


def _remove_stale_spill_dirs(context: Any) -> None:
    """Once per container: spill directories left by a clip killed mid-way (older than the function timeout)."""
    if _WARM_START_CACHE.get("spill_dirs_checked"):
        return
    _WARM_START_CACHE["spill_dirs_checked"] = True
    from sceneclip.core.output import remove_stale_workdirs

    # At the first invocation the time left is (nearly) the whole function timeout.
    timeout_s = max(1.0, context.get_remaining_time_in_millis() / 1000) if context is not None else 900.0
    removed = remove_stale_workdirs(get_app().pipeline.settings.tmpdir, timeout_s)
    if removed:
        logger.warning("removed spill directories left by a killed clip", extra={"removed": removed})


def _idempotency(settings: Any, ddb: Any) -> tuple[Any, Any]:
    """(wrapper, config): duplicate deliveries of one object version + region + configuration clip once.

    The typed boundary ``clip_job(job: ClipJob) -> VerificationRecord`` is what Powertools wraps: only an
    ``ok`` record is ever returned (and stored, through :func:`record_serializer`); a failure raises, and
    Powertools deletes the in-progress record, so a redelivery clips again instead of replaying the failure.
    """
    if not settings.idempotency_table:
        logger.warning("SCENECLIP_IDEMPOTENCY_TABLE is not set: duplicate deliveries will be clipped again")
        return None, None
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from sceneclip.aws.jobs import ClipJob, ClipRunner
    from sceneclip.core.records import VerificationRecord

    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=ddb)
    config = IdempotencyConfig(
        # A mosaic's group and every source's bucket/key/version/ETag are in the key too.
        event_key_jmespath="[bucket, key, version_id, etag, region, config_hash, boundary_version, item_edition, "
                           "group, sources]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=settings.idempotency_ttl_s,
    )

    def wrap(clip_region: ClipRunner) -> ClipRunner:
        @idempotent_function(data_keyword_argument="job", persistence_store=persistence, config=config,
                             output_serializer=record_serializer())
        def clip_job(job: ClipJob) -> VerificationRecord:
            record = clip_region(job)
            if not record.ok and record.status != "superseded":  # failures raise; never cached (superseded is final)
                raise RuntimeError(f"clip_region returned a {record.status} record for {job.scene}")
            return record

        return lambda job: clip_job(job=job)

    return wrap, config


def record_serializer() -> Any:
    """A Powertools output serializer for :class:`VerificationRecord` (stored as its JSON dict, NaN nodata as
    "nan"). Built on first use: the idempotency package costs ~120 ms to import and is not always on."""
    from aws_lambda_powertools.utilities.idempotency.serialization.base import BaseIdempotencySerializer

    from sceneclip.core.records import VerificationRecord

    class RecordSerializer(BaseIdempotencySerializer):
        def to_dict(self, data: Any) -> dict:
            return data.to_dict()

        def from_dict(self, data: dict) -> Any:
            return VerificationRecord.from_dict(data)

    return RecordSerializer()


def _emit_metrics(records: list[Any]) -> None:
    for rec in records:
        if rec.status == "ok":
            metrics.add_metric(name="ScenesClipped", unit=MetricUnit.Count, value=1)
            if rec.bytes_fetched is not None:
                metrics.add_metric(name="BytesFetched", unit=MetricUnit.Bytes, value=rec.bytes_fetched)
            if rec.size_bytes is not None:
                metrics.add_metric(name="OutputBytes", unit=MetricUnit.Bytes, value=rec.size_bytes)
        elif rec.status == "superseded":  # an older source version: reported, not published, not a failure
            metrics.add_metric(name="ClipSuperseded", unit=MetricUnit.Count, value=1)
        elif rec.status == "skipped":  # a STAC Item SCENECLIP_STAC_FILTER rejected: nothing was read
            metrics.add_metric(name="ItemsSkipped", unit=MetricUnit.Count, value=1)
        else:
            metrics.add_metric(name="ClipFailures", unit=MetricUnit.Count, value=1)
            _failure_by_type(rec.error_type or "Unknown")
        if rec.duration_ms is not None:
            metrics.add_metric(name="ClipDuration", unit=MetricUnit.Milliseconds, value=rec.duration_ms)


def _failure_by_type(error_type: str) -> None:
    """Failures with an ErrorType dimension (a separate EMF blob: dimensions are per metric set)."""
    with single_metric(name="ClipFailuresByType", unit=MetricUnit.Count, value=1,
                       namespace=metrics.namespace) as metric:
        metric.add_dimension(name="ErrorType", value=error_type)


def _count_ignored() -> None:
    """An event with nothing to clip (s3:TestEvent) is counted too: every invocation then has a metric to
    publish, so Powertools never flushes an empty set ("No application metrics to publish")."""
    metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)


@tracer.capture_method
def process_ref(ref: Ref, attempt: int | None = None, context: Any = None) -> list[dict[str, Any]]:
    """One scene: permanent failures are recorded and returned; transient ones raise (retry).

    The scene's regions share the time ``context`` has left (none: no deadline).
    """
    logger.append_keys(scene=ref.uri)
    deadline = deadline_from_context(context, _WARM_START_CACHE.get("deadline_margin_s", 10.0)) if context else None
    try:
        records = get_app().pipeline.process(ref, attempt=attempt, deadline=deadline)
    except SceneclipError:
        # Transient: the failed record is written and the scene will be retried; count it here, since the
        # records never reach _emit_metrics.
        metrics.add_metric(name="TransientFailures", unit=MetricUnit.Count, value=1)
        raise
    _emit_metrics(records)
    return [{"scene": r.source, "region": r.region, "status": r.status, "output": r.output,
             "error_type": r.error_type, "error": r.error, "transient": r.transient} for r in records]


def record_handler(record: SQSRecord, lambda_context: Any = None) -> list[dict[str, Any]]:
    """One SQS message. Raising marks only this message failed (ReportBatchItemFailures).

    Powertools passes ``lambda_context`` because the signature names it: the deadline comes from it.
    """
    try:
        refs = parse_sqs_body(record.body, max_records=get_app().pipeline.settings.max_event_records)
    except InvalidEventError as exc:
        # A malformed message can never succeed: log it and let it go (it does not loop).
        logger.error("unparseable SQS message dropped", extra={"message_id": record.message_id, "error": str(exc)})
        metrics.add_metric(name="ClipFailures", unit=MetricUnit.Count, value=1)
        _failure_by_type("InvalidEventError")
        return []
    if not refs:
        _count_ignored()
    out: list[dict[str, Any]] = []
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    try:
        for ref in refs:
            out += process_ref(ref, attempt=receive_count(record), context=lambda_context)
    except (IdempotencyAlreadyInProgressError, OutputBusyError) as exc:  # the same output is being written now
        from sceneclip.aws.inflight import defer, deferral_visibility_s

        metrics.add_metric(name="ClipInProgressDeferred", unit=MetricUnit.Count, value=1)
        raise defer(record.message_id, record.receipt_handle, record.event_source_arn,
                    visibility_s=deferral_visibility_s()) from exc
    return out


def receive_count(record: SQSRecord) -> int | None:
    """The delivery attempt SQS counts (``ApproximateReceiveCount``; the worker's events carry it too)."""
    try:
        return int(record.attributes.approximate_receive_count)
    except (TypeError, ValueError, KeyError):
        return None


@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.set_correlation_id(getattr(context, "aws_request_id", None))
    try:
        app = get_app()  # configuration errors surface here, at cold start, naming the variable
    except SceneclipError:
        metrics.add_metric(name="ConfigErrors", unit=MetricUnit.Count, value=1)  # never an empty metric set
        raise
    if app.idempotency is not None:
        app.idempotency.register_lambda_context(context)
    _remove_stale_spill_dirs(context)
    if is_sqs_event(event):
        return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    try:
        refs = parse_event(event, max_records=get_app().pipeline.settings.max_event_records)
    except InvalidEventError as exc:
        logger.error("unsupported event", extra={"error": str(exc)})
        metrics.add_metric(name="InvalidEvents", unit=MetricUnit.Count, value=1)
        return {"statusCode": 400, "error": str(exc), "results": []}
    if not refs:  # s3:TestEvent and friends
        logger.info("event acknowledged, nothing to clip")
        _count_ignored()
        return {"statusCode": 200, "results": []}
    results: list[dict[str, Any]] = []
    for ref in refs:
        try:
            results += process_ref(ref, context=context)
        except SceneclipError as exc:
            if not exc.permanent:
                logger.warning("transient failure, raising for retry", extra={"error": str(exc)})
            raise
    return {"statusCode": 200, "results": results}


# Last, once everything above exists: on SnapStart / provisioned-concurrency INIT, build the app now (it is
# snapshotted or kept warm) and, under SnapStart, refresh clients and seeds after each restore.
_snapstart.install(_WARM_START_CACHE, get_app)
