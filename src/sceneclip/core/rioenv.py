"""One rasterio session per set of AWS credentials in the environment, instead of one per ``rasterio.Env``.

rasterio opens an environment for every ``rasterio.features.rasterize``/``shapes`` call (its
``_rasterize`` enters ``Env(GDAL_MEM_ENABLE_OPEN=True)``), and an ``Env`` created while
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` are in ``os.environ`` — always so on Lambda — builds a new
``boto3.Session`` through ``Session.from_environ()``: 21 ms each, measured here, against 0.3 ms for the
rasterisation itself. A clip rasterises its boundary once per chunk and the STAC footprint vectorises the
mask, so a 64-chunk clip paid about 2 s for sessions it never used.

:func:`reuse_environ_sessions` wraps ``Session.from_environ`` (argument-less calls only) with a cache keyed
on the environment variables the session reads, so the same credentials give the same session object and
changed credentials (another token, profile or region) a new one — exactly what rasterio would build.
"""

from __future__ import annotations

import os
from typing import Any

from rasterio.session import AWSSession, Session

# Everything AWSSession and boto3 read from the environment when built without arguments.
_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
             "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST", "AWS_REQUEST_PAYER", "AWS_CONFIG_FILE",
             "AWS_SHARED_CREDENTIALS_FILE")
_cache: dict[tuple[str | None, ...], Any] = {}


def reuse_environ_sessions() -> None:
    """Install the cache once per process (idempotent); see the module notes."""
    if getattr(Session.from_environ, "sceneclip_cached", False):
        return
    original = Session.from_environ

    def from_environ(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return original(*args, **kwargs)
        key = tuple(os.environ.get(name) for name in _ENV_KEYS)
        session = _cache.get(key)
        if session is None:
            session = original()
            if isinstance(session, AWSSession):  # a DummySession (expired keys) is cheap and not kept
                _cache.clear()  # one set of credentials at a time
                _cache[key] = session
        return session

    from_environ.sceneclip_cached = True  # type: ignore[attr-defined]
    Session.from_environ = staticmethod(from_environ)  # type: ignore[method-assign]
