"""Served models: what the engine needs of a deployment's model, made ready once.

::

    ServingTarget ─► weights (a catalog base, converted on first use if GGUF, or a full
                     fine-tuned model's) + adapter ─► engine.prepare (resident, leased)
                  ─► tokenizer, template, stop tokens (serving/assets.py), kept for the
                     most recently served models

A chat request loads its model through :meth:`ServedModels.load` and :meth:`ServedModels.prepare`
(``chat.Serving.open_call``). A new deployment is loaded ahead of its first request,
off the request path (:meth:`ServedModels.warm`), and the outcome becomes its status
(``deployments/status.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tunesmith.auth import Principal
from tunesmith.catalog.models import ModelUnavailable, materialize
from tunesmith.deployments.routing import ServingTarget, resolve_target
from tunesmith.deployments.status import list_creating, record_load
from tunesmith.errors import InvalidRequest, TunesmithError
from tunesmith.protocol.deployments import DeploymentError
from tunesmith.serving.assets import ModelAssets, load_assets
from tunesmith.serving.engine import Engine, ModelSource
from tunesmith.settings import Settings
from tunesmith.store.db import transaction
from tunesmith.store.tables import DeploymentRow, ModelRow

log = logging.getLogger(__name__)
_ASSETS_KEPT = 64  # tokenizers and templates of recently served models


class ServedModels:
    """The models one server serves: their assets (tokenizer, template) of the recently served
    ones, and their weights made resident in the engine."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], engine: Engine):
        self.settings = settings
        self.sessions = sessions
        self.engine = engine
        self._assets: OrderedDict[tuple[ModelSource, Path], ModelAssets] = OrderedDict()
        self._tokenizers: dict[str, ModelAssets] = {}
        """Loaded tokenizers by fingerprint, shared by the models whose files are identical."""
        self._assets_lock = threading.Lock()
        self._loading: dict[tuple[ModelSource, Path], threading.Lock] = {}
        """The models whose assets a request is loading now, held until it is done."""

    def load(self, target: ServingTarget, owner: Path | None) -> tuple[ModelSource, ModelAssets]:
        """The weights (and adapter) to serve and the served model's assets; ``owner`` is
        :func:`weights_owner`. Blocking: the first use of a GGUF model converts it."""
        source, folder = _source_of(target, owner, self.settings)
        return source, self._assets_of(source, folder, target.deployment.model_id)

    def prepare(self, source: ModelSource, model_id: str) -> None:
        """Makes the weights (and adapter) resident; a model the engine cannot run is the
        request's error."""
        try:
            self.engine.prepare(source)
        except ValueError as exc:  # an architecture or adapter the engine cannot run
            raise _not_servable(model_id, f"{exc}.") from None

    def warm(self, deployment_id: str) -> None:
        """Loads a ``creating`` deployment's weights, adapter and tokenizer ahead of its first
        request, and records how that ended as its status (``deployments.status.record_load``):
        ``succeeded``, or ``failed`` with the error a chat request for it answers. Requests
        meanwhile load on their own (waiting for the same conversion) and report any failure
        as before. A deployment deleted meanwhile records nothing."""
        error: DeploymentError | None = None
        try:
            with transaction(self.sessions) as session:
                row = session.get(DeploymentRow, deployment_id)
                if row is None:
                    return
                target = resolve_target(
                    session,
                    Principal("warm-up", row.project_id, "reader"),
                    row.name,
                    now=int(time.time()),
                    touch=False,
                )
                owner = weights_owner(session, target)
            source, _ = self.load(target, owner)
            self.prepare(source, target.deployment.model_id)
        except TunesmithError as exc:  # model_not_servable, as a request for it would answer
            error = DeploymentError(code=exc.code or exc.error_type, message=exc.message)
        except Exception as exc:
            log.exception("loading the model of deployment %s failed", deployment_id)
            error = DeploymentError(
                code="model_load_failed", message=f"Loading failed ({type(exc).__name__}: {exc})."
            )
        try:
            with transaction(self.sessions) as session:
                record_load(session, deployment_id=deployment_id, error=error, now=int(time.time()))
        except Exception:  # off the request path: nobody to answer; it stays creating
            log.exception("recording the status of deployment %s failed", deployment_id)

    def warm_creating(self) -> None:
        """Loads every deployment a previous run of the server left ``creating`` (it stopped
        while loading), one after the other; ``succeeded`` ones load on their first request."""
        try:
            with transaction(self.sessions) as session:
                waiting = [row.id for row in list_creating(session)]
            for deployment_id in waiting:
                self.warm(deployment_id)
        except Exception:  # the server runs on; each deployment still loads on its first request
            log.exception("loading the deployments left creating failed")

    def _assets_of(self, source: ModelSource, folder: Path, name: str) -> ModelAssets:
        """The model's assets, loaded once however many requests ask at the same time: the
        first loads them, the others wait for it (one lock per model being loaded)."""
        key = (source, folder)
        while True:
            with self._assets_lock:
                if key in self._assets:
                    self._assets.move_to_end(key)
                    return self._assets[key]
                loading = self._loading.get(key)
                if loading is None:
                    loading = self._loading[key] = threading.Lock()
                    loading.acquire()
                    break
            with loading:  # another request is loading them; look again once it is done
                pass
        try:
            assets = load_assets(source, folder, name, known=self._tokenizers)
            with self._assets_lock:
                self._assets[key] = assets
                while len(self._assets) > _ASSETS_KEPT:
                    self._assets.popitem(last=False)
            return assets
        finally:  # loaded or failed: the next one waiting looks again (and tries itself)
            with self._assets_lock:
                del self._loading[key]
            loading.release()


def weights_owner(session: Session, target: ServingTarget) -> Path | None:
    """The folder of the full fine-tuned model a deployed adapter runs on, if it has one (an
    adapter trained on top of a fully fine-tuned model); None: the catalog base model."""
    row = target.model
    if row is None or row.kind == "full" or not row.weights_of:
        return None
    owner = session.get(ModelRow, row.weights_of)
    return Path(owner.path) if owner is not None else None


def _source_of(
    target: ServingTarget, owner: Path | None, settings: Settings
) -> tuple[ModelSource, Path]:
    """The weights (and adapter) to serve, and the folder holding the served tokenizer. A GGUF
    base model is converted on first use (once, however many requests ask at the same time);
    one that cannot be is the request's error, not a server error."""
    row = target.model
    if row is not None and row.kind == "full":
        path = Path(row.path)
        return ModelSource(path), path
    weights = owner
    if weights is None:
        try:
            weights = materialize(target.base, settings.model_cache_dir())
        except ModelUnavailable as exc:
            raise _not_servable(target.deployment.model_id, str(exc)) from None
    if row is None:
        return ModelSource(weights), weights
    path = Path(row.path)
    return ModelSource(weights, path), path


def _not_servable(model_id: str, reason: str) -> InvalidRequest:
    """The error of a model the engine cannot serve: what a chat request for it answers, and
    what a deployment of it records as its ``failed`` status."""
    return InvalidRequest(
        f"{model_id} cannot be served: {reason}", param="model", code="model_not_servable"
    )
