"""``create_app(settings)``: the one place the server is assembled.

Building the app prepares the data directory, loads the key-encryption key (refusing one that
cannot be used, ``sealing.py``), runs the database migrations, makes sure the default project
and an admin key exist, and wires the routers. A newly generated admin key is
left on ``app.state.generated_admin_key`` for the caller (the CLI) to print once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tunesmith import __version__, housekeeping
from tunesmith.api import openapi
from tunesmith.api.azure import AzurePaths
from tunesmith.api.deps import Runtime
from tunesmith.api.errors import install_error_handlers
from tunesmith.api.file_work import FileWork
from tunesmith.api.routes import (
    apidocs,
    base_models,
    chat,
    deployments,
    endpoints,
    files,
    health,
    jobs,
    models,
    moderations,
    projects,
    serving,
    uploads,
    usage,
    webhooks,
)
from tunesmith.api.routes.portal import mount_portal
from tunesmith.auth import bootstrap_admin_key, ensure_default_project, hash_key
from tunesmith.catalog.registration import Registrar
from tunesmith.chat import Serving
from tunesmith.jobs.worker import Worker
from tunesmith.private_files import private_dir
from tunesmith.ratelimits import RateLimiter
from tunesmith.sealing import installation_sealer
from tunesmith.settings import Settings, check_admin_key_strength
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.validation import FileValidator
from tunesmith.webhook_delivery import Dispatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    if settings.admin_key is not None:
        check_admin_key_strength(settings.admin_key.get_secret_value())
    private_dir(settings.home)
    sealer = installation_sealer(settings)
    engine = make_engine(
        settings.resolved_database_url(),
        pool_size=settings.database_pool_size(),
        pool_timeout=settings.database_pool_timeout_seconds,
        busy_timeout_seconds=settings.database_busy_timeout_seconds,
    )
    upgrade_to_head(engine, sealer=sealer)
    sessions = make_session_factory(engine)
    now = int(time.time())
    generated: str | None = None
    with transaction(sessions) as session:
        ensure_default_project(session, now)
        if settings.admin_key is None:
            generated = bootstrap_admin_key(session, settings.admin_key_path(), now)
    admin = settings.admin_key.get_secret_value() if settings.admin_key else None
    validator = FileValidator(settings)
    worker = Worker(settings, sessions) if settings.embedded_worker else None
    limiter = RateLimiter()
    serving_runtime = Serving.from_settings(settings, sessions, limiter)
    file_work = FileWork(settings.file_workers)
    registrar = Registrar(sessions, settings)
    runtime = Runtime(
        settings=settings,
        sessions=sessions,
        blobs=BlobStore(settings.blob_dir()),
        validate=validator,
        admin_key_hash=hash_key(admin) if admin else None,
        sealer=sealer,
        registrar=registrar,
        wake_worker=worker.wake if worker else lambda: None,
        limiter=limiter,
        serving=serving_runtime,
        file_work=file_work,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The threads of blocking request work; the database pool holds one connection each.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.request_threads
        # Load (and on first start convert) the tokenizer now rather than in the first upload.
        warm = asyncio.create_task(run_in_threadpool(validator.warm_up))
        task = asyncio.create_task(_sweep_forever(runtime))
        deliveries = asyncio.create_task(_deliver_forever(runtime))
        serving_runtime.engine.start()
        # Deployments a previous run left creating (it stopped while loading them) load again.
        reload = asyncio.create_task(run_in_threadpool(serving_runtime.models.warm_creating))
        registrar.resume()  # registrations a stopped server left half done
        stop_worker = threading.Event()
        worker_thread = None
        if worker is not None:
            worker_thread = threading.Thread(
                target=worker.run, args=(stop_worker,), name="tunesmith-worker", daemon=True
            )
            worker_thread.start()
        try:
            yield
        finally:
            if worker is not None and worker_thread is not None:
                stop_worker.set()
                worker.wake()
                # Running jobs checkpoint and go back to the queue before the server exits.
                await run_in_threadpool(worker_thread.join)
            for loop_task in (task, deliveries):
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            await warm
            await reload
            await run_in_threadpool(serving_runtime.stop)
            await run_in_threadpool(file_work.shutdown)
            await run_in_threadpool(registrar.shutdown)
            engine.dispose()

    app = FastAPI(
        title="tunesmith",
        version=__version__,
        description="Self-hosted fine-tuning foundry with an OpenAI-compatible API.",
        lifespan=lifespan,
        docs_url=None,  # apidocs serves /docs with local assets
        redoc_url=None,
    )
    apidocs.install(app)
    openapi.install(app)
    app.state.runtime = runtime
    app.state.generated_admin_key = generated
    install_error_handlers(app)
    app.include_router(health.router)
    for router in (
        projects.router,
        projects.identity,
        files.router,
        uploads.router,
        jobs.router,
        models.router,
        base_models.router,
        webhooks.router,
        deployments.router,
        usage.router,
        moderations.router,
        chat.router,
        serving.router,
    ):
        app.include_router(router)
        # Azure OpenAI's v1 paths ({endpoint}/openai/v1/...), for clients configured for Azure;
        # AzurePaths maps the classic ones (/openai/files?api-version=...) onto these.
        app.include_router(router, prefix="/openai", include_in_schema=False)
    app.include_router(chat.azure)
    app.include_router(endpoints.router)  # each deployment's scoring_uri
    app.add_middleware(AzurePaths)
    mount_portal(app)
    return app


async def _sweep_forever(runtime: Runtime) -> None:
    while True:
        try:
            await run_in_threadpool(
                lambda: housekeeping.sweep(
                    runtime.sessions,
                    runtime.blobs,
                    now=int(time.time()),
                    deployment_idle_seconds=runtime.settings.deployment_idle_seconds,
                )
            )
        except Exception:  # keep sweeping; one bad pass must not stop the server's clean-up
            log.exception("housekeeping sweep failed")
        await asyncio.sleep(runtime.settings.expiry_sweep_seconds)


async def _deliver_forever(runtime: Runtime) -> None:
    settings = runtime.settings
    dispatcher = Dispatcher()  # passes start lanes and do not wait for them
    try:
        while True:
            try:
                await run_in_threadpool(
                    dispatcher.start,
                    runtime.sessions,
                    now=time.time(),
                    timeout_seconds=settings.webhook_timeout_seconds,
                    max_attempts=settings.webhook_max_attempts,
                    retry_base_seconds=settings.webhook_retry_base_seconds,
                    allow=settings.webhook_allowed(),
                )
            except Exception:  # keep delivering; one bad pass must not stop the others
                log.exception("webhook delivery pass failed")
            await asyncio.sleep(settings.webhook_poll_seconds)
    finally:
        dispatcher.close()
