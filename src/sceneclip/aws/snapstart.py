"""Lambda SnapStart (and provisioned concurrency): do the heavy set-up in INIT, refresh what must be fresh.

With SnapStart, Lambda runs INIT once per published version, snapshots the memory, and starts each new
container from that snapshot. Work done in INIT is then paid once instead of at every cold start, so on those
init types the handler module builds everything the first invocation would: rasterio/GDAL/numpy/shapely, the
pipeline modules, Powertools' idempotency package, botocore's service models and the :class:`App`.

What must not be shared between containers restored from one snapshot is re-created in the after-restore hook
(``snapshot_restore_py``, part of the Python managed runtime):

* boto3 clients take their credentials from the session, which resolves them once and keeps them; those
  captured at snapshot time belong to the snapshot. The default boto3 session is replaced by a new one that
  keeps the old one's data loader (the parsed service models: the expensive part) but not its credentials,
  and the :class:`App` (clients, idempotency layer) is rebuilt from it.
* Python's ``random`` is re-seeded (every restored container would otherwise draw the same sequence).
  sceneclip itself takes tokens from ``secrets``/``uuid4`` (the OS's entropy, fresh after restore) and seeds
  its verification sampling explicitly, so nothing else depends on process state.
* No connection is open at snapshot time (``get_app()`` opens none; the boundary store loads on first use),
  so no socket needs closing; the once-per-container checks (stale spill directories) run after restore.

On ``on-demand`` initialisation nothing here runs: INIT stays light and the app is built on first use.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Callable, MutableMapping
from typing import Any

#: ``AWS_LAMBDA_INITIALIZATION_TYPE`` values whose INIT is not on a request's critical path.
PREWARM_INIT_TYPES = frozenset({"snap-start", "provisioned-concurrency"})

#: Modules the first clip imports that ``get_app()`` does not (the output check, the STAC Item, the deferral
#: path, Powertools' idempotency errors): importing them in INIT moves that cost out of the first request.
FIRST_CLIP_MODULES = (
    "sceneclip.core.cogcheck",
    "sceneclip.core.stac",
    "sceneclip.aws.inflight",
    "aws_lambda_powertools.utilities.idempotency.exceptions",
)

#: Warm-start cache keys that hold per-container state the restore must not inherit.
RESTORE_RESET_KEYS = ("app", "spill_dirs_checked")


def init_type(environ: MutableMapping[str, str] | None = None) -> str:
    """How Lambda is initialising this container (``on-demand`` when not on Lambda)."""
    env = os.environ if environ is None else environ
    return env.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")


def prewarm(get_app: Callable[[], Any]) -> None:
    """Build the app and import the first clip's modules now, and register GDAL's drivers.

    Raises what ``get_app()`` raises (a configuration error then fails INIT, naming the variable, which is
    what an on-demand container reports at its first request).
    """
    get_app()
    for name in FIRST_CLIP_MODULES:
        importlib.import_module(name)
    import rasterio

    with rasterio.Env():  # GDALAllRegister happens once, here, after GDAL_SKIP was set at import
        pass


def after_restore(cache: MutableMapping[str, Any], get_app: Callable[[], Any]) -> None:
    """Forget what a restored container must not share, then rebuild the app with fresh credentials."""
    for key in RESTORE_RESET_KEYS:
        cache.pop(key, None)
    random.seed()
    fresh_default_session()
    get_app()


def fresh_default_session() -> None:
    """A new default boto3 session (credentials resolved again) that reuses the parsed service models."""
    import boto3
    import botocore.session

    fresh = botocore.session.get_session()
    if boto3.DEFAULT_SESSION is not None:
        fresh.register_component("data_loader", boto3.DEFAULT_SESSION._session.get_component("data_loader"))
    boto3.setup_default_session(botocore_session=fresh)


def install(cache: MutableMapping[str, Any], get_app: Callable[[], Any],
            environ: MutableMapping[str, str] | None = None) -> bool:
    """Prewarm on SnapStart / provisioned-concurrency INIT and register the restore hook; True if it did.

    The hook is registered only under SnapStart, through the runtime's own ``snapshot_restore_py`` (absent
    outside Lambda, where there is nothing to restore from).
    """
    kind = init_type(environ)
    if kind not in PREWARM_INIT_TYPES:
        return False
    prewarm(get_app)
    if kind == "snap-start":
        from snapshot_restore_py import register_after_restore

        register_after_restore(after_restore, cache, get_app)
    return True
