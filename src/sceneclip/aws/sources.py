"""Source buckets we may not own: who pays for the reads, and which region the bucket lives in.

Public archives (Landsat Collection 2, Sentinel-2 COGs) sit in other accounts and often in other regions;
some are *requester-pays*: S3 answers 403 AccessDenied unless each request carries
``x-amz-request-payer: requester``. So, per source bucket:

* **who pays** — :class:`RequesterPays` (``SCENECLIP_REQUESTER_PAYS``: ``true`` for every source bucket, or a
  list of bucket names). Only those buckets get ``RequestPayer="requester"`` on boto3 calls and
  ``AWS_REQUEST_PAYER=requester`` in the GDAL environment of *that* open (never process-global), so no other
  bucket's requests are ever billed to us;
* **where** — :func:`bucket_region`: the bucket's region, found once per bucket (HeadBucket's
  ``x-amz-bucket-region`` header, which S3 sends even with a 403, else GetBucketLocation) and kept in
  :data:`BUCKET_REGION_WARM_START_CACHE` for the container's life. GDAL signs for that region and the boto3
  client that HEADs, reads and presigns for the source is made for it (a URL presigned for the wrong region
  is refused by S3).

:class:`SourceAccess` carries both for one bucket; :class:`SourceBuckets` makes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sceneclip.aws.s3 import SceneObject, head_scene
from sceneclip.errors import DENIED, AccessDeniedError, ConfigError, Evidence, RequesterPaysError, SceneclipError

log = logging.getLogger("sceneclip.aws.sources")

REQUESTER = "requester"
PAYER_HEADER = "x-amz-request-payer"
SETTING = "SCENECLIP_REQUESTER_PAYS"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"", "false", "0", "no", "off"}

#: Warm-start cache: bucket name → region, filled once per bucket per container (buckets never move region).
BUCKET_REGION_WARM_START_CACHE: dict[str, str] = {}


@dataclass(frozen=True)
class RequesterPays:
    """The source buckets whose requests (and transfer) this account agrees to pay for."""

    every_bucket: bool = False
    buckets: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str | None, name: str = SETTING) -> RequesterPays:
        """``true`` (every source bucket), ``false``/empty (none), or comma/space-separated bucket names."""
        text = (raw or "").strip()
        if text.lower() in _FALSE:
            return cls()
        if text.lower() in _TRUE:
            return cls(every_bucket=True)
        names = tuple(dict.fromkeys(v for v in re.split(r"[,\s]+", text) if v))
        bad = [n for n in names if not _BUCKET_NAME.match(n)]
        if bad:
            raise ConfigError(f"{name}={raw!r}: {', '.join(bad)} is not a bucket name; use true, false or a "
                              "comma-separated list of bucket names (no wildcards)")
        return cls(buckets=names)

    def applies(self, bucket: str) -> bool:
        return self.every_bucket or bucket in self.buckets


def allow_request_payer(s3: Any) -> Any:
    """Let ``head_bucket`` and ``get_bucket_location`` take ``RequestPayer="requester"`` like the object calls.

    S3 wants the header on every request to a requester-pays bucket, but botocore's model has the parameter
    only for object and listing calls; these two hooks move it into the header (and so into the signature).
    Registering again is a no-op (``unique_id``). Returns the client.
    """
    for op in ("HeadBucket", "GetBucketLocation"):
        s3.meta.events.register(f"before-parameter-build.s3.{op}", _take_payer, unique_id=f"sceneclip-payer-{op}")
        s3.meta.events.register(f"before-call.s3.{op}", _send_payer, unique_id=f"sceneclip-payer-header-{op}")
    return s3


def _take_payer(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if params.pop("RequestPayer", None) == REQUESTER:
        context["sceneclip_request_payer"] = True


def _send_payer(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if context.get("sceneclip_request_payer"):
        params["headers"][PAYER_HEADER] = REQUESTER


def bucket_region(s3: Any, bucket: str, *, requester_pays: bool = False,
                  cache: dict[str, str] | None = None) -> str | None:
    """The bucket's region, from the warm-start cache or looked up once; None when S3 would not say.

    HeadBucket first: S3 sends ``x-amz-bucket-region`` with a 200, a 301 and a 403 alike, so a bucket we
    may not list still tells its region; then GetBucketLocation. A failed lookup is not cached (the next
    scene tries again) and is no error: the read then goes out with the function's region, as before.
    """
    cache = BUCKET_REGION_WARM_START_CACHE if cache is None else cache
    if bucket in cache:
        return cache[bucket]
    payer = {"RequestPayer": REQUESTER} if requester_pays else {}
    allow_request_payer(s3)
    region = _region_from_head(s3, bucket, payer) or _region_from_location(s3, bucket, payer)
    if region:
        cache[bucket] = region
    else:
        log.warning("bucket region unknown: reading with the function's region", extra={"bucket": bucket})
    return region


def _region_from_head(s3: Any, bucket: str, payer: dict[str, str]) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = s3.head_bucket(Bucket=bucket, **payer)
    except ClientError as exc:
        response = exc.response
    except BotoCoreError:
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region") or None


def _region_from_location(s3: Any, bucket: str, payer: dict[str, str]) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        constraint = s3.get_bucket_location(Bucket=bucket, **payer).get("LocationConstraint")
    except (ClientError, BotoCoreError):
        return None
    # S3's legacy answers: none for us-east-1, "EU" for eu-west-1.
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)


def regional_client(bucket: str, *, requester_pays: bool = False) -> Any:
    """A default-configured S3 client made for ``bucket``'s region (:func:`bucket_region`; unknown: the default)."""
    import boto3

    region = bucket_region(boto3.client("s3"), bucket, requester_pays=requester_pays)
    return boto3.client("s3", **({"region_name": region} if region else {}))


@dataclass(frozen=True)
class SourceAccess:
    """How one source bucket is read: its region (None: the function's), whether we pay, the client for it."""

    bucket: str
    region: str | None
    requester_pays: bool
    s3: Any

    @property
    def payer(self) -> dict[str, str]:
        """boto3 keyword arguments for object and listing calls on this bucket."""
        return {"RequestPayer": REQUESTER} if self.requester_pays else {}

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for opens of this bucket (set inside that open's ``rasterio.Env`` only)."""
        opts: dict[str, str] = {}
        if self.requester_pays:
            opts["AWS_REQUEST_PAYER"] = REQUESTER
        if self.region:
            opts["AWS_REGION"] = opts["AWS_DEFAULT_REGION"] = self.region
        return opts

    def rasterio_env(self, extra: dict[str, str], deadline: Any = None) -> Any:
        """The ``rasterio.Env`` one open of this bucket runs in: cloud-read and source-safety options, HTTP
        timeouts capped to ``deadline``, no stale curl cache, this bucket's region and payer, then ``extra``
        (:func:`sceneclip.aws.s3.gdal_source`'s pinning options)."""
        import rasterio

        from sceneclip.core.deadline import gdal_http_options
        from sceneclip.core.gdalenv import CLOUD_READ_OPTIONS, gdal_s3_options, non_cached_option

        opts: dict[str, Any] = gdal_s3_options()
        opts.update(gdal_http_options(deadline, CLOUD_READ_OPTIONS))  # no call may outlive the budget
        opts.update(non_cached_option(self.bucket))
        opts.update(self.gdal_options())
        # The .tif/.tiff URL rule stays on for presigned URLs too: GDAL tests the path before the query string.
        opts.update(extra)
        return rasterio.Env(session=self.gdal_session(), **opts)

    def gdal_session(self) -> Any:
        """The rasterio session for ``rasterio.Env(session=...)``, or None for rasterio's default.

        Needed because with credentials in the environment (always, on Lambda) rasterio builds its own
        session per Env and writes *its* region over ``AWS_REGION``; this one carries ours and the payer.
        Made per open, as rasterio makes its own (~20 ms here): nothing holds credentials across a SnapStart
        restore.
        """
        if not self.region and not self.requester_pays:
            return None
        from rasterio.session import AWSSession

        return AWSSession(region_name=self.region, requester_pays=self.requester_pays)


@dataclass
class SourceBuckets:
    """Makes the :class:`SourceAccess` of a source bucket: ``s3_for(deadline, region)`` gives a client whose
    timeouts fit the deadline, made for that region (None: the function's)."""

    requester_pays: RequesterPays
    s3_for: Callable[..., Any]
    regions: dict[str, str] = field(default_factory=lambda: BUCKET_REGION_WARM_START_CACHE)

    def access(self, bucket: str, deadline: Any = None) -> SourceAccess:
        pays = self.requester_pays.applies(bucket)
        default = self.s3_for(deadline, None)
        region = bucket_region(default, bucket, requester_pays=pays, cache=self.regions)
        here = region is None or region == getattr(getattr(default, "meta", None), "region_name", None)
        return SourceAccess(bucket, region, pays, default if here else self.s3_for(deadline, region))


def confirm_requester_pays(err: SceneclipError, access: SourceAccess, key: str,
                           version_id: str | None = None) -> SceneclipError:
    """An AccessDenied on a source we do not pay for: find out whether the bucket is requester-pays.

    One HEAD of the same object with ``x-amz-request-payer: requester`` (a request billed at a HEAD's price,
    no transfer) is the evidence: allowed with the header → :class:`RequesterPaysError` saying to set
    ``SCENECLIP_REQUESTER_PAYS``; denied again (or any other answer) → ``err`` unchanged, an IAM matter.
    """
    if access.requester_pays or not isinstance(err, AccessDeniedError) or isinstance(err, RequesterPaysError):
        return err
    kwargs: dict[str, Any] = {"Bucket": access.bucket, "Key": key, "RequestPayer": REQUESTER}
    if version_id and version_id != "null":
        kwargs["VersionId"] = version_id
    try:
        access.s3.head_object(**kwargs)
    except Exception:  # denied with the header too, or unreachable: the first answer stands
        return err
    denied = str(getattr(getattr(err, "evidence", None), "detail", "") or "403")
    denied = f"HTTP {denied}" if denied.isdigit() else denied  # a HEAD's 403 has no body, so no S3 code
    out = RequesterPaysError(
        f"s3://{access.bucket}/{key}: the bucket is requester-pays: S3 denied the read without "
        f"{PAYER_HEADER} ({denied}) and allowed the same HEAD with it; set {SETTING}={access.bucket} "
        f"(or {SETTING}=true) to read it, with its requests and transfer billed to this account, then redrive"
    )
    out.evidence = Evidence(DENIED, f"{denied} without {PAYER_HEADER}, allowed with it")  # type: ignore[attr-defined]
    out.__cause__ = err
    return out


def head_source(access: SourceAccess, key: str, version_id: str | None = None) -> SceneObject:
    """HEAD a source object as ``access`` says (region's client, payer); a denial from a requester-pays bucket
    we do not pay for becomes :class:`RequesterPaysError` (:func:`confirm_requester_pays`)."""
    try:
        return head_scene(access.s3, access.bucket, key, version_id, payer=access.payer)
    except SceneclipError as exc:
        confirmed = confirm_requester_pays(exc, access, key, version_id)
        if confirmed is exc:
            raise
        raise confirmed from exc


def s3_buckets(uris: list[str] | tuple[str, ...]) -> list[str]:
    """The distinct buckets of the ``s3://`` and ``/vsis3/`` URIs among ``uris``, in order."""
    names = [u.split("://", 1)[1] if u.startswith("s3://") else u[len("/vsis3/"):]
             for u in uris if u.startswith(("s3://", "/vsis3/"))]
    return list(dict.fromkeys(n.split("/", 1)[0] for n in names))


def workstation_reads(uris: list[str] | tuple[str, ...], *, requester_pays: bool) -> tuple[dict[str, str], Any]:
    """(GDAL options, rasterio session) for reading these S3 sources from the CLI: their bucket's region and,
    with ``requester_pays``, the payer (one ``rasterio.Env`` serves the whole clip, so one region for all).

    Raises ConfigError when the sources' buckets live in different regions (GDAL signs for one per Env).
    """
    import boto3

    buckets = s3_buckets(uris)
    if not buckets:
        return {}, None
    s3 = boto3.client("s3")
    regions = {b: bucket_region(s3, b, requester_pays=requester_pays) for b in buckets}
    known = {r for r in regions.values() if r}
    if len(known) > 1:
        raise ConfigError("the sources' buckets are in different regions ("
                          + ", ".join(f"{b}: {r}" for b, r in regions.items() if r)
                          + "): clip them separately, or copy them into one region")
    access = SourceAccess(buckets[0], next(iter(known), None), requester_pays, s3)
    # GDAL's per-path cache outlives an Env: a read made before (paid or not) must not answer this one.
    from sceneclip.core.gdalenv import non_cached_option

    return {**access.gdal_options(), **non_cached_option(*buckets)}, access.gdal_session()


def requester_pays_hint(uris: list[str] | tuple[str, ...], error: str) -> str:
    """``error`` with a pointer to ``--requester-pays`` when an S3 source's bucket is requester-pays by evidence:
    S3 denied the clip's reads and allows a HEAD of that object with the payer header."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    if "denied" not in error.lower() and "403" not in error:
        return error
    s3 = allow_request_payer(boto3.client("s3"))
    for uri in uris:
        bucket = next(iter(s3_buckets([uri])), None)
        if bucket is None:
            continue
        key = uri.split("://", 1)[1].split("/", 1)[1] if uri.startswith("s3://") else uri.split("/", 3)[3]
        try:
            s3.head_object(Bucket=bucket, Key=key, RequestPayer=REQUESTER)
        except (ClientError, BotoCoreError):
            continue
        return (f"{error} — s3://{bucket} is requester-pays (S3 allows the read with {PAYER_HEADER}): add "
                "--requester-pays to read it, with its requests and transfer billed to your account")
    return error
