"""What a model page shows beyond the catalog entry: the licence and the chat template.

Both are read from files alone — a GGUF header, a README's YAML front matter, a tokenizer's
``chat_template.jinja`` or ``tokenizer_config.json`` — never through transformers, so the API
process lists models without loading a deep-learning stack. A GGUF header is read once per file
version (path, size, modification time) and remembered, so listing the catalog stays cheap.

Where each comes from:

- the bundled model and GGUF files: the header's ``general.license``; the chat template of the
  converted folder in the model cache, or the header's ``tokenizer.chat_template`` before the
  first conversion;
- a local Hugging Face folder: ``license:`` in its ``README.md`` front matter (the model card);
  the template saved in the folder;
- a Hub id: neither (registration fetches no model card, and the snapshot may not be there).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml

from tunesmith.catalog.bundled import (
    BundledModelMissing,
    bundled_gguf,
    bundled_model_dir,
    bundled_tokenizer_dir,
)
from tunesmith.catalog.cache import gguf_folder, is_complete
from tunesmith.catalog.gguf_header import NotGguf, read_metadata
from tunesmith.catalog.sources import source_kind
from tunesmith.catalog.spec import BaseModelSpec


def license_of(spec: BaseModelSpec) -> str | None:
    """The licence identifier of a base model (``"apache-2.0"``), or None when it names none."""
    kind = source_kind(spec.source)
    if kind in ("bundled", "gguf"):
        gguf = _gguf_of(spec)
        return _gguf_facts(gguf)[0] if gguf is not None else None
    if kind == "folder":
        return _readme_license(Path(spec.source) / "README.md")
    return None


def base_chat_template(spec: BaseModelSpec, cache_dir: Path) -> str | None:
    """The chat template a base model is served with, or None when none can be read yet.

    ``cache_dir`` is ``Settings.model_cache_dir()``, where GGUF models are converted."""
    kind = source_kind(spec.source)
    if kind == "folder":
        return chat_template_in(Path(spec.source))
    gguf = _gguf_of(spec) if kind in ("bundled", "gguf") else None
    if gguf is None:
        return None
    if kind == "bundled":
        converted = [bundled_model_dir(cache_dir), bundled_tokenizer_dir(cache_dir)]
    else:
        try:
            converted = [gguf_folder(cache_dir, gguf)]
        except OSError:  # the file is gone
            return None
    for folder in converted:
        if is_complete(folder):
            return chat_template_in(folder)
    return _gguf_facts(gguf)[1]


def chat_template_in(folder: Path) -> str | None:
    """The chat template saved in a Hugging Face folder: ``chat_template.jinja`` (how
    transformers 5 saves it, and what it loads first), else ``tokenizer_config.json``'s
    ``chat_template`` (the ``default`` one where it lists named templates)."""
    try:
        text = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    if text:
        return text
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def _gguf_of(spec: BaseModelSpec) -> Path | None:
    if source_kind(spec.source) == "gguf":
        return Path(spec.source)
    try:
        return bundled_gguf()
    except BundledModelMissing:
        return None


def _gguf_facts(gguf: Path) -> tuple[str | None, str | None]:
    """``general.license`` and ``tokenizer.chat_template`` from the header; (None, None) for a
    file that is gone or unreadable."""
    try:
        stat = gguf.stat()
    except OSError:
        return None, None
    return _read_gguf_facts(str(gguf), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_gguf_facts(path: str, _size: int, _mtime_ns: int) -> tuple[str | None, str | None]:
    try:
        metadata = read_metadata(Path(path))
    except (NotGguf, OSError):
        return None, None
    license_, template = metadata.get("general.license"), metadata.get("tokenizer.chat_template")
    return (
        license_ if isinstance(license_, str) and license_ else None,
        template if isinstance(template, str) and template else None,
    )


def _readme_license(readme: Path) -> str | None:
    try:
        stat = readme.stat()
    except OSError:
        return None
    return _read_readme_license(str(readme), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_readme_license(path: str, _size: int, _mtime_ns: int) -> str | None:
    """``license:`` from the YAML front matter (between the leading ``---`` lines) of a model
    card, as the Hugging Face Hub writes it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return None
    try:
        front = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return None
    value = front.get("license") if isinstance(front, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None
