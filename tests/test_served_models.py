"""Served models: the first requests for a model, arriving together, share one load of its
tokenizer and template (a crowd on a new deployment must not load it once per request)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

from tests.toy_model import build_toy_model_dir
from tunesmith.served_models import ServedModels
from tunesmith.serving.assets import ModelAssets
from tunesmith.serving.engine import ModelSource
from tunesmith.settings import Settings


def test_a_crowd_of_first_requests_loads_the_assets_once(tmp_path: Path) -> None:
    folder = build_toy_model_dir(tmp_path / "toy")
    models = ServedModels(Settings(home=tmp_path / "home"), cast(Any, None), cast(Any, None))
    crowd = 8
    barrier = threading.Barrier(crowd)
    got: list[ModelAssets] = []

    def first_request() -> None:
        barrier.wait()
        got.append(models._assets_of(ModelSource(folder), folder, "toy"))

    threads = [threading.Thread(target=first_request) for _ in range(crowd)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == crowd
    assert len({id(assets) for assets in got}) == 1  # one load, shared by all eight
