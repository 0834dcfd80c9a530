"""``sceneclip backfill | worker | redrive | status``: parse options, call sceneclip.aws.backfill / worker / ops.

The function's configuration (for backfill's "already done?" check and status's table) is read the way the
function reads it: the ``SCENECLIP_*`` variables, or a SAM ``--env-vars`` file as ``sceneclip invoke`` takes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import click

from sceneclip.cli.options import fail
from sceneclip.errors import SceneclipError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

env_vars_option = click.option(
    "-n", "--env-vars", type=click.Path(exists=True, dir_okay=False), default=None,
    help="SAM env-vars JSON ({\"ClipFunction\": {\"SCENECLIP_RECORDS_TABLE\": ...}, \"Parameters\": {...}}) "
         "applied over the environment.")
function_option = click.option("--function-id", default="ClipFunction", show_default=True,
                               help="Logical id whose entry of --env-vars applies.")


def _environment(env_vars: str | None, function_id: str) -> Mapping[str, str]:
    from sceneclip.tools.local import read_env_vars

    return {**os.environ, **read_env_vars(env_vars, function_id)}


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.command(context_settings=CONTEXT, short_help="Enqueue every scene under an S3 prefix (or STAC Item) still to do.")
@click.argument("source", metavar="s3://BUCKET/PREFIX", required=False)
@click.option("--stac", "stac_items", default=None, metavar="ITEMS",
              help="Instead of listing a prefix: one message per STAC Item of this ItemCollection, Item or static "
                   "catalog (a path, s3:// URI or https URL); Items whose selected assets are done are skipped.")
@click.option("--stac-api", "stac_api", default=None, metavar="URL",
              help="Instead: one message per Item a STAC API item search returns (pystac-client), narrowed by "
                   "--collections, --intersects, --datetime and --filter.")
@click.option("--collections", "collections", multiple=True, metavar="ID[,ID]",
              help="--stac-api: search these collections (repeat or comma-separate).")
@click.option("--intersects", default=None, metavar="REGION",
              help="--stac-api: only Items intersecting this region of the boundary store (SCENECLIP_BOUNDARIES); "
                   "the messages then ask for that region unless --region says otherwise.")
@click.option("--datetime", "datetime_range", default=None, metavar="A/B",
              help="--stac-api: RFC 3339 instant or interval, open ends as '..' (e.g. 2023-01-01/2023-12-31).")
@click.option("--filter", "cql2_filter", default=None, metavar="CQL2",
              help="--stac-api: CQL2-text on Item properties, e.g. \"eo:cloud_cover < 20\"; sent to APIs that "
                   "support it and always checked here with the function's evaluator.")
@click.option("--queue", "queue_url", required=True, help="Work queue URL (the stack output WorkQueueUrl).")
@click.option("--suffix", "suffixes", multiple=True, default=(".tif", ".tiff"), show_default=True,
              help="Only keys ending with this (case-insensitive); repeat for several.")
@click.option("--since", default=None, help="Only objects modified on or after this date/time (UTC), e.g. 2026-01-01.")
@click.option("--region", default=None, help="Clip every scene to this region (a region id of the store); only "
                                             "this region's record counts as done.")
@click.option("--group-by", "group_by", default=None, metavar="REGEX",
              help="One mosaic message per (group, region): the named group (?P<group>...) searched in each key "
                   "(e.g. a date) groups the listed objects, in key order (the first valid pixel wins); output "
                   "{prefix}{region}/{group}.tif. Done mosaics (ok for the same sources) are skipped.")
@click.option("--force", is_flag=True, help="Enqueue every scene, done or not, with \"force\": true (bypasses idempotency).")
@click.option("--dry-run", is_flag=True, help="List what would be enqueued; send nothing.")
@click.option("--requester-pays", is_flag=True,
              help="List a requester-pays bucket, paying for the listing (implied when the function's "
                   "SCENECLIP_REQUESTER_PAYS names the bucket; the function needs that setting to read it).")
@env_vars_option
@function_option
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when it is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def backfill(source: str | None, stac_items: str | None, stac_api: str | None, collections: tuple[str, ...],
             intersects: str | None, datetime_range: str | None, cql2_filter: str | None, queue_url: str,
             suffixes: tuple[str, ...], since: str | None, region: str | None, group_by: str | None, force: bool,
             dry_run: bool,
             requester_pays: bool, env_vars: str | None, function_id: str, progress: bool | None,
             as_json: bool) -> None:
    """Enqueue one message per scene under s3://BUCKET/PREFIX that has no result yet for the function's configuration.

    A scene version (its ETag) is skipped when the records table holds its ok records for the same
    configuration (config hash of the SCENECLIP_* settings), or a permanent failure (not a raster, no
    overlap, ...); a transient failure is enqueued again. Re-running after a partial run enqueues only what
    is still missing. Messages are the direct payload the SQS handler accepts: {"bucket", "key", "etag",
    "region"?, "force"?}. Exit status 1 when SQS refused some messages after retries.

    With --stac ITEMS, the messages are {"stac_item": {Item}, "region"?, "force"?}, one per Item of the
    ItemCollection or catalog; an Item is skipped when every selected asset (SCENECLIP_STAC_ASSETS) is done
    for its current ETag, or when the filter already skipped this edition of it.

    With --stac-api URL the Items come from the API's item search instead (same messages, same skips).

    With --group-by REGEX the listed objects are grouped by the regex's named group (searched in the key) and,
    per group, by region (--region, else SCENECLIP_REGION_PATTERN, else the store regions each footprint
    intersects: one header read per object); one message {"sources": [{"bucket", "key", "etag"}, ...],
    "region", "group", "force"?} per (group, region), skipped when its record is ok for the same sources.

    \b
    Examples:
      sceneclip backfill s3://archive/landsat/ --queue $WORK_QUEUE_URL --since 2026-01-01 --env-vars env.json
      sceneclip backfill s3://archive/landsat/ --group-by '_(?P<group>[0-9]{8})_' --queue $WORK_QUEUE_URL
      sceneclip backfill --stac s3://catalogs/s2/items.json --queue $WORK_QUEUE_URL --env-vars env.json
      sceneclip backfill --stac-api https://earth-search.aws.element84.com/v1 --collections sentinel-2-l2a \\
          --intersects Libya --datetime 2024-01-01/2024-12-31 --filter "eo:cloud_cover < 20" --queue $WORK_QUEUE_URL
    """
    from sceneclip.aws.backfill import parse_since, run_backfill
    from sceneclip.aws.config import Settings

    if sum(x is not None for x in (source, stac_items, stac_api)) != 1:
        fail("give either s3://BUCKET/PREFIX, --stac ITEMS or --stac-api URL")
    if stac_api is None and (collections or intersects or datetime_range or cql2_filter):
        fail("--collections, --intersects, --datetime and --filter narrow a --stac-api search")
    if group_by is not None and source is None:
        fail("--group-by groups the objects listed under s3://BUCKET/PREFIX into mosaics")
    try:
        settings = None
        environment = _environment(env_vars, function_id)
        if not force or environment.get("SCENECLIP_RECORDS_TABLE"):
            settings = Settings.from_env(environment)
        if stac_items is not None or stac_api is not None:
            from sceneclip.aws.stac_api import ApiSearch
            from sceneclip.aws.stac_backfill import run_stac_backfill

            what = stac_items if stac_api is None else ApiSearch(
                url=stac_api, collections=tuple(c for cs in collections for c in cs.split(",") if c),
                datetime=datetime_range, filter=cql2_filter)
            summary = run_stac_backfill(what, queue_url, settings=settings, region=region, intersects=intersects,
                                        force=force, dry_run=dry_run)
        elif group_by is not None:
            from sceneclip.aws.backfill_mosaic import run_mosaic_backfill

            _warn_unpaid_reads(source or "", settings, requester_pays)
            summary = run_mosaic_backfill(source or "", queue_url, group_by=group_by, settings=settings,
                                          suffixes=tuple(s for s in suffixes if s), since=parse_since(since),
                                          region=region, force=force, dry_run=dry_run, requester_pays=requester_pays)
        else:
            _warn_unpaid_reads(source or "", settings, requester_pays)
            summary = run_backfill(source or "", queue_url, settings=settings, suffixes=tuple(s for s in suffixes if s),
                                   since=parse_since(since), region=region, force=force, dry_run=dry_run,
                                   progress=progress, requester_pays=requester_pays)
    except SceneclipError as exc:
        fail(str(exc))
    if as_json:
        _echo_json(summary.to_dict())
    else:
        if dry_run:
            for message in summary.planned:
                click.echo(json.dumps(message))
        for failure in summary.failures:
            click.echo(f"sceneclip: not enqueued: {failure['key']}: {failure['code']} {failure['message']}", err=True)
        click.echo(summary.line(), err=True)
    raise SystemExit(summary.exit_code)


def _warn_unpaid_reads(source: str, settings: Any, requester_pays: bool) -> None:
    """--requester-pays lists the bucket; if the function will not pay to read it, each scene would fail."""
    from sceneclip.aws.backfill import parse_s3_uri

    bucket = parse_s3_uri(source)[0]
    if requester_pays and settings is not None and not settings.requester_pays.applies(bucket):
        click.echo(f"sceneclip: warning: the function's SCENECLIP_REQUESTER_PAYS does not name {bucket}: "
                   "its reads of these scenes will fail (RequesterPaysError) until it does", err=True)


@click.command(context_settings=CONTEXT, short_help="Process the work queue here with the Lambda's handler.")
@click.option("--queue", "queue_url", required=True, help="Work queue URL.")
@click.option("--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Receive loops, each in its own process (1 = in this process).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 10),
              help="Messages per handler call, as the SQS event source's BatchSize.")
@click.option("--wait-time", default=20, show_default=True, type=click.IntRange(0, 20), help="Long-poll seconds.")
@click.option("--visibility-timeout", default=None, type=click.IntRange(1, 43200),
              help="Seconds a received message stays hidden (renewed while it is processed); default: the queue's.")
@click.option("--retry-delay", default=None, type=click.IntRange(0, 43200),
              help="Seconds before a failed message is visible again; default: its visibility timeout runs out.")
@click.option("--max-messages", default=None, type=click.IntRange(1), help="Per process, stop after receiving this many.")
@click.option("--drain", is_flag=True, help="Stop when the queue has no waiting, in-flight or delayed message.")
@click.option("--timeout", "timeout_s", default=900, show_default=True, type=click.IntRange(1, 43200),
              help="Function timeout (s): each batch's deadline; the clip gives up before it and the message is "
                   "no longer kept invisible after it.")
@env_vars_option
@function_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout when stopping.")
def worker(queue_url: str, concurrency: int, batch_size: int, wait_time: int, visibility_timeout: int | None,
           retry_delay: int | None, max_messages: int | None, drain: bool, timeout_s: int, env_vars: str | None,
           function_id: str, as_json: bool) -> None:
    """Long-poll the work queue and run each batch through the same handler as the Lambda function.

    Per-message failures are reported as on Lambda (ReportBatchItemFailures): successful messages are
    deleted, failed ones return to the queue and reach the dead-letter queue after the queue's
    maxReceiveCount. Visibility is extended while a message is processed. SIGINT/SIGTERM stop receiving;
    the messages held are finished first. The function's SCENECLIP_* configuration comes from the
    environment or --env-vars; logs are JSON lines (Powertools), as on Lambda.

    \b
    Example:
      sceneclip worker --queue $WORK_QUEUE_URL --concurrency 4 --env-vars env.json
    """
    from sceneclip.tools.local import read_env_vars
    from sceneclip.aws.worker import run_worker

    os.environ.update(read_env_vars(env_vars, function_id))  # inherited by the spawned processes
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon off Lambda
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", function_id)
    try:
        summary = run_worker(queue_url, concurrency=concurrency, wait_time=wait_time,
                             visibility_timeout=visibility_timeout, batch_size=batch_size, max_messages=max_messages,
                             stop_when_empty=drain, retry_delay=retry_delay, timeout_s=timeout_s)
    except (SceneclipError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        _echo_json(summary.to_dict())
    else:
        click.echo(f"sceneclip worker: {summary.received} received, {summary.succeeded} done, {summary.failed} failed "
                   f"(left for retry/DLQ), {summary.released} released in {summary.duration_s:.1f} s "
                   f"with {concurrency} process(es): {summary.messages_per_minute} messages/min", err=True)
    for error in summary.errors:
        click.echo(f"sceneclip: worker error: {error}", err=True)
    raise SystemExit(1 if summary.errors else 0)


@click.command(context_settings=CONTEXT, short_help="Move dead-lettered messages back to the work queue.")
@click.option("--from", "source_url", required=True, help="Queue to move from (the DeadLetterQueueUrl output).")
@click.option("--to", "target_url", required=True, help="Queue to move to (the WorkQueueUrl output).")
@click.option("--max", "max_messages", default=None, type=click.IntRange(1), help="Move at most this many.")
@click.option("--dry-run", is_flag=True, help="List the message bodies that would move; move nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def redrive(source_url: str, target_url: str, max_messages: int | None, dry_run: bool, as_json: bool) -> None:
    """Send the messages of --from to --to (batches of 10) and delete each from --from once --to accepted it.

    Fix the cause first (status lists the failure reasons): a message that failed transiently many times
    will fail again if the cause remains.

    \b
    Example:
      sceneclip redrive --from $DLQ_URL --to $WORK_QUEUE_URL --max 100
    """
    from sceneclip.aws.ops import redrive as run_redrive

    summary = run_redrive(source_url, target_url, max_messages=max_messages, dry_run=dry_run)
    if as_json:
        _echo_json(summary.to_dict())
    else:
        for body in summary.bodies:
            click.echo(body)
        click.echo(summary.line(), err=True)
    raise SystemExit(summary.exit_code)


@click.command(context_settings=CONTEXT, short_help="Record counts, top failure reasons, queue depths.")
@click.option("--table", default=None, help="Records table; default SCENECLIP_RECORDS_TABLE (environment or --env-vars).")
@click.option("--queue", "queue_url", default=None, help="Work queue URL: report its depth.")
@click.option("--dlq", "dlq_url", default=None, help="Dead-letter queue URL: report its depth.")
@click.option("--prefix", "scene_prefix", default=None, help="Only scenes under this s3://bucket/prefix.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(0), help="Failure reasons to list.")
@env_vars_option
@function_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
def status(table: str | None, queue_url: str | None, dlq_url: str | None, scene_prefix: str | None, top: int,
           env_vars: str | None, function_id: str, as_json: bool) -> None:
    """Counts of ok / failed / skipped records, the most common failure reasons, and the queues' depths.

    \b
    Example:
      sceneclip status --queue $WORK_QUEUE_URL --dlq $DLQ_URL --env-vars env.json
    """
    from sceneclip.aws.ops import status as run_status

    table = table or _environment(env_vars, function_id).get("SCENECLIP_RECORDS_TABLE")
    if not table:
        fail("no records table: pass --table or set SCENECLIP_RECORDS_TABLE (environment or --env-vars)")
    queues = tuple(q for q in (queue_url, dlq_url) if q)
    result = run_status(table, queues=queues, top=top, scene_prefix=scene_prefix)
    if as_json:
        _echo_json(result.to_dict())
    else:
        for line in result.lines():
            click.echo(line)


COMMANDS = (backfill, worker, redrive, status)
