"""Shared fixtures: a toy tokenizer folder, settings in a temporary home, a live server on a
free loopback port, and the official ``openai`` client pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from tests.browser import chromium  # noqa: F401 (a fixture, by name)
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures, by name)
from tests.toy_model import build_toy_model_dir
from tunesmith.api.app import create_app
from tunesmith.settings import Settings

ADMIN_KEY = "tsk-test-admin-key-7Qp2vXw9Lm4Rz8Kd"


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_model_dir(tmp_path_factory.mktemp("toy-model"))


@pytest.fixture(scope="session")
def bundled_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct, converted from its GGUF once per test session (about half
    a minute) into a model cache of its own; its parent is that cache."""
    from tunesmith.catalog.models import BUNDLED, materialize

    return materialize(BUNDLED, tmp_path_factory.mktemp("model-cache"))


@pytest.fixture
def settings(tmp_path: Path, toy_model_dir: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        admin_key=ADMIN_KEY,
        validation_model_dir=toy_model_dir,
        max_file_bytes=4 * 1024 * 1024,
        max_part_bytes=1024 * 1024,
        max_upload_bytes=16 * 1024 * 1024,
        embedded_worker=False,  # no job processes for tests that run no jobs
    )


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    settings: Settings

    def client(self, key: str = ADMIN_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def http(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port (to build settings that know the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_live(
    app: FastAPI, settings: Settings, sock: socket.socket | None = None
) -> Iterator[LiveServer]:
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    yield from run_live(create_app(settings), settings)


@pytest.fixture
def client(live: LiveServer) -> openai.OpenAI:
    return live.client()


TOY_BASE = "toy-llama"
"""The toy model, registered in the catalog of every ``jobs_live`` server."""


def jobs_settings_for(home: Path, toy_model_dir: Path, **overrides: object) -> Settings:
    """Settings for a server that trains: a fast-polling worker and short leases."""
    values: dict[str, object] = {
        "home": home,
        "admin_key": ADMIN_KEY,
        "validation_model_dir": toy_model_dir,
        "worker_poll_seconds": 0.05,
        "job_lease_seconds": 3.0,
        "job_stop_grace_seconds": 20.0,
        "device": "cpu",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def register_toy_base(app: FastAPI, toy_model_dir: Path, model_id: str = TOY_BASE) -> None:
    """Registers the toy model and runs the background part of its registration (hashing its
    files) before returning, so it is ready."""
    from tunesmith.catalog import registration
    from tunesmith.catalog.base_models import register_base_model
    from tunesmith.store.db import transaction

    settings = app.state.runtime.settings
    with transaction(app.state.runtime.sessions) as session:
        register_base_model(
            session,
            model_id=model_id,
            source=str(toy_model_dir),
            cache_dir=settings.model_cache_dir(),
            now=int(time.time()),
        )
    registration.complete(app.state.runtime.sessions, settings, model_id)


@pytest.fixture
def jobs_settings(tmp_path: Path, toy_model_dir: Path) -> Settings:
    return jobs_settings_for(tmp_path / "home", toy_model_dir)


@pytest.fixture
def jobs_live(jobs_settings: Settings, toy_model_dir: Path) -> Iterator[LiveServer]:
    """A live server with an embedded worker and the toy model in its catalog."""
    app = create_app(jobs_settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, jobs_settings)


@pytest.fixture
def jobs_api(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    """Like ``jobs_live`` without a worker: for requests that must be refused."""
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, embedded_worker=False)
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, settings)


@pytest.fixture
def separate_settings(tmp_path: Path, toy_model_dir: Path) -> Settings:
    """Settings for a server whose jobs run in a worker started apart (by the test)."""
    return jobs_settings_for(tmp_path / "home", toy_model_dir, embedded_worker=False)


@pytest.fixture
def api_only(separate_settings: Settings, toy_model_dir: Path) -> Iterator[LiveServer]:
    """A server without a worker, on ``separate_settings``, the toy base registered."""
    app = create_app(separate_settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, separate_settings)
