"""S3 I/O for the pipeline: find the scene version, pick the GDAL path, upload the output.

boto3 honours ``AWS_ENDPOINT_URL`` itself; GDAL gets the same endpoint through ``sceneclip.core.gdalenv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sceneclip.core.gdalenv import pinned_read_option
from sceneclip.errors import MISSING, PermanentError, UnsafeKeyError, UploadError, classify

_GONE = "the object does not exist (deleted after the event, or never there)"
# Outputs above the threshold go up in parts (boto3 aborts the upload on failure: no partial object).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
COG_CONTENT_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

def aws_error_code(exc: BaseException) -> str:
    """The error code of a botocore ClientError (its HTTP status when the code is empty), else the class name.
    For reports only: classification is :func:`sceneclip.errors.classify`'s job."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code or str(status or "")
    return type(exc).__name__


@dataclass(frozen=True)
class SceneObject:
    """The exact object version a clip reads."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    last_modified: str | None = None  # ISO-8601 UTC: orders versions when the event carries no sequencer

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def head_scene(s3: Any, bucket: str, key: str, version_id: str | None = None, *,
               payer: dict[str, str] | None = None) -> SceneObject:
    """HEAD the object (``payer``: ``{"RequestPayer": "requester"}`` for a requester-pays bucket)."""
    from botocore.exceptions import BotoCoreError, ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **(payer or {})}
    if version_id and version_id != "null":
        kwargs["VersionId"] = version_id
    try:
        head = s3.head_object(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise classify(exc, what=f"HEAD s3://{bucket}/{key}", hints={MISSING: _GONE}) from exc
    version = head.get("VersionId")
    return SceneObject(
        bucket=bucket,
        key=key,
        version_id=None if version in (None, "null") else version,
        etag=str(head.get("ETag", "")).strip('"'),
        size=int(head.get("ContentLength", 0)),
        last_modified=_iso(head.get("LastModified")),
    )


# Characters GDAL's /vsis3/ path syntax would reinterpret (a query, a fragment): such keys go through a
# presigned URL, where boto3 percent-encodes them, so the path GDAL opens names exactly that key.
_VSIS3_UNSAFE = frozenset("?#%&=+ \"'<>{}|^`")


def refuse_unsafe_key(bucket: str, key: str) -> None:
    """Refuse keys whose path GDAL or curl would rewrite into another key.

    Both collapse ``.``/``..`` segments (``scenes/../other.tif`` would read ``other.tif``), ``//`` and a
    leading ``/`` change the key, and ``\\`` is a path separator to GDAL on some paths. No S3 client writes
    such keys by accident; there is no encoding that reaches them through GDAL safely.
    """
    segments = key.split("/")
    why = None
    if key.startswith("/"):
        why = "starts with '/'"
    elif "\\" in key:
        why = "contains a backslash"
    elif any(seg in (".", "..") for seg in segments):
        why = "has a '.' or '..' path segment"
    elif "" in segments[:-1]:
        why = "has an empty path segment ('//')"
    if why:
        raise UnsafeKeyError(
            f"s3://{bucket}/{key}: the key {why}, which GDAL would resolve to a different object; "
            "rename the object (refused, nothing was read)"
        )


def gdal_source(s3: Any, obj: SceneObject, *, expires_s: int = 900,
                payer: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(path GDAL opens, extra GDAL options), pinned to exactly the object the event announced.

    A versioned object is read through a presigned URL of that version (/vsis3/ cannot name a version). An
    unversioned one is read with ``If-Match: <etag>`` on every request, so an overwrite between the HEAD and
    the last range read fails (412 → SupersededError) instead of mixing two objects; its path is /vsis3/
    unless the key holds characters that path syntax reinterprets, then a presigned URL of exactly the key.
    Presigned URLs live ``expires_s`` (the function's timeout), not an hour. With ``payer`` (requester-pays)
    the URL carries ``x-amz-request-payer=requester`` in its query, the form S3 documents for signed URLs;
    /vsis3/ reads get ``AWS_REQUEST_PAYER`` from the open's environment instead.
    """
    refuse_unsafe_key(obj.bucket, obj.key)
    params: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, **(payer or {})}
    extra: dict[str, str] = {}
    if obj.version_id:
        params["VersionId"] = obj.version_id
    else:
        extra.update(pinned_read_option(obj.etag))
        if not (set(obj.key) & _VSIS3_UNSAFE):
            return f"/vsis3/{obj.bucket}/{obj.key}", extra
    url = s3.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_s))
    # A URL signed for GET refuses HEAD; GDAL must size the file with a ranged GET instead.
    extra["CPL_VSIL_CURL_USE_HEAD"] = "NO"
    return f"/vsicurl/{url}", extra


@dataclass(frozen=True)
class Uploaded:
    """What S3 said about the object *we* wrote: taken from the PUT/Complete response, never a later HEAD
    (a HEAD may already see another writer's object)."""

    etag: str
    version_id: str | None


def upload(s3: Any, fileobj: Any, bucket: str, key: str, *, content_type: str, metadata: dict[str, str],
           threshold: int | None = None, part_size: int | None = None) -> Uploaded:
    """Write ``fileobj`` to ``s3://bucket/key``: PutObject below ``threshold`` (default ``MULTIPART_THRESHOLD``),
    else a multipart upload in ``part_size`` parts (``MULTIPART_CHUNKSIZE``) that is aborted on any failure (so
    no partial object is ever visible). Returns the response's ETag and VersionId."""
    threshold = MULTIPART_THRESHOLD if threshold is None else threshold
    part_size = MULTIPART_CHUNKSIZE if part_size is None else part_size
    meta = {k: metadata_value(v) for k, v in metadata.items() if v is not None}
    args = {"Bucket": bucket, "Key": key, "ContentType": content_type, "Metadata": meta}
    try:
        first = fileobj.read(threshold)
        if len(first) < threshold:
            resp = s3.put_object(Body=first, **args)
        else:
            resp = _multipart(s3, first, fileobj, args, part_size)
    except Exception as exc:  # botocore errors; an OSError reading the file is typed by the classifier too
        raise classify(exc, what=f"upload to s3://{bucket}/{key}", transient=UploadError, permanent=PermanentError) from exc
    version = resp.get("VersionId")
    return Uploaded(str(resp.get("ETag", "")).strip('"'), None if version in (None, "null") else version)


def _multipart(s3: Any, first: bytes, fileobj: Any, args: dict[str, Any], part_size: int) -> dict[str, Any]:
    upload_id = s3.create_multipart_upload(**args)["UploadId"]
    where = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload_id}
    try:
        parts: list[dict[str, Any]] = []
        buffer = first
        while True:
            while len(buffer) < part_size and (chunk := fileobj.read(part_size - len(buffer))):
                buffer += chunk
            if not buffer:
                break
            body, buffer = buffer[:part_size], buffer[part_size:]
            number = len(parts) + 1
            parts.append({"ETag": s3.upload_part(Body=body, PartNumber=number, **where)["ETag"], "PartNumber": number})
        return s3.complete_multipart_upload(MultipartUpload={"Parts": parts}, **where)
    except BaseException:
        try:
            s3.abort_multipart_upload(**where)
        except Exception:  # the lifecycle rule removes what an abort could not
            pass
        raise


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def first_bytes(s3: Any, obj: SceneObject, n: int = 16, *, payer: dict[str, str] | None = None) -> bytes:
    """The object's first ``n`` bytes (one ranged GET of exactly the version read); raises typed errors."""
    kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, "Range": f"bytes=0-{n - 1}", **(payer or {})}
    if obj.version_id:
        kwargs["VersionId"] = obj.version_id
    try:
        return s3.get_object(**kwargs)["Body"].read()
    except Exception as exc:
        if aws_error_code(exc) == "InvalidRange":  # S3's answer for a range of an empty object
            return b""
        raise classify(exc, what=f"re-reading the first bytes of {obj.uri}", hints={MISSING: _GONE}) from exc


def put_json(s3: Any, bucket: str, key: str, doc: dict[str, Any]) -> None:
    import io

    upload(s3, io.BytesIO(json.dumps(doc, indent=1).encode()), bucket, key, content_type="application/json", metadata={})


# S3 allows 2 KB of user metadata in all; nine values of at most this many bytes stay well inside it.
METADATA_VALUE_LIMIT = 256


def metadata_value(value: Any, limit: int = METADATA_VALUE_LIMIT) -> str:
    """An S3 user-metadata value: ASCII (the rest percent-encoded), at most ``limit`` bytes.

    A longer value is *truncated and hashed*: its first bytes, then ``...sha256=<hex of the full value>``, so
    it stays recognisable and unambiguous (the full value is in the verification record). A 300-character
    CJK key is 2,700 bytes encoded, over S3's limit for all metadata together.
    """
    import hashlib
    from urllib.parse import quote

    text = str(value)
    encoded = text if text.isascii() else quote(text, safe="/:=+-_.~ ")
    if len(encoded) <= limit:
        return encoded
    digest = hashlib.sha256(text.encode()).hexdigest()
    tail = f"...sha256={digest}"
    head = encoded[: limit - len(tail)]
    if "%" in head[-2:]:  # never cut a %xx escape in half
        head = head[: head.rindex("%")]
    return head + tail


def _iso(value: Any) -> str | None:
    """botocore's LastModified (a datetime) as ISO-8601 UTC with microseconds, so strings sort like times."""
    if value is None:
        return None
    from datetime import timezone

    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
