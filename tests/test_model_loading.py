"""Model loads run alone in the process and leave its shared state as they found it, whether
they succeed or fail: a failed GGUF conversion (a truncated file, for real) is reported clearly
on every try, and the next load of a good model in the same process still works."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from pathlib import Path

import pytest
import torch
from transformers.modeling_utils import PreTrainedModel

from tunesmith.catalog import loading
from tunesmith.catalog.bundled import bundled_gguf
from tunesmith.catalog.models import BUNDLED, ConversionFailed, load_causal_lm, materialize


def assert_whole_and_tied(model: PreTrainedModel) -> None:
    assert not [name for name, p in model.named_parameters() if p.is_meta]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_state_a_load_leaves_switched_is_put_back(
    toy_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What two interleaved ``from_pretrained`` calls leave behind (each restores the other's
    patch): ``tie_weights`` a no-op, init functions replaced, another default dtype."""
    before = loading.snapshot()
    original_normal = torch.nn.init.normal_
    with pytest.raises(RuntimeError, match="the load failed"), loading.exclusive_load():
        PreTrainedModel.tie_weights = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
        torch.nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
        torch.set_default_dtype(torch.float64)
        raise RuntimeError("the load failed")
    assert loading.snapshot() == before
    assert torch.nn.init.normal_ is original_normal
    assert torch.get_default_dtype() == torch.float32
    warning = next(r.getMessage() for r in caplog.records if r.name == "tunesmith.catalog.loading")
    for name in ("torch default dtype", "PreTrainedModel.tie_weights", "torch.nn.init.normal_"):
        assert name in warning
    model = load_causal_lm(toy_model_dir)
    assert_whole_and_tied(model)


def test_loads_on_many_threads_each_get_a_whole_model(toy_model_dir: Path) -> None:
    models: list[PreTrainedModel] = []
    threads = [
        threading.Thread(target=lambda: models.append(load_causal_lm(toy_model_dir)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(models) == 4
    for model in models:
        assert_whole_and_tied(model)
        torch.testing.assert_close(model.state_dict(), models[0].state_dict())


@pytest.mark.slow
def test_a_failed_conversion_is_reported_on_every_try_and_poisons_nothing(
    tmp_path: Path, toy_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunesmith.catalog.conversion")
    broken = tmp_path / "broken.gguf"
    with bundled_gguf().open("rb") as whole, broken.open("wb") as part:
        part.write(whole.read(20_000_000))  # the header and a fifth of the tensors
    spec = dataclasses.replace(BUNDLED, id="broken", source=str(broken))
    cache = tmp_path / "cache"
    before = loading.snapshot()
    messages = []
    for _ in range(2):
        with pytest.raises(ConversionFailed) as failed:
            materialize(spec, cache)
        messages.append(str(failed.value))
    assert messages[0] == messages[1]  # tried again, and the same clear answer
    assert str(broken) in messages[0] and "truncated" in messages[0]
    assert "(ValueError: " in messages[0]  # the cause, as the GGUF reader put it
    started = [r for r in caplog.records if r.getMessage().startswith("converting ")]
    assert len(started) == 2
    assert loading.snapshot() == before
    assert [p.name for p in (cache / "gguf").iterdir()] == []  # no staging left behind
    assert_whole_and_tied(load_causal_lm(toy_model_dir))
    # The whole file, put back in place, converts (a replaced file is a new cache entry).
    shutil.copyfile(bundled_gguf(), broken)
    assert_whole_and_tied(load_causal_lm(materialize(spec, cache)))
