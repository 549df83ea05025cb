"""Binds the data validator to the installation's tokenizer, loaded once on first use.

The tokenizer is the bundled SmolLM2-135M-Instruct's unless ``TUNESMITH_VALIDATION_MODEL_DIR``
names another Hugging Face folder. Loading is lazy (the server starts instantly) and guarded by a
lock (concurrent first uploads load it once)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tunesmith.catalog.bundled import BUNDLED_MODEL_ID, ensure_bundled_tokenizer
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.validate import ValidationReport, validate_file
from tunesmith.settings import Settings

log = logging.getLogger(__name__)


class FileValidator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._format: ChatFormat | None = None

    def chat_format(self) -> ChatFormat:
        with self._lock:
            if self._format is None:
                folder = self._settings.validation_model_dir
                if folder is None:
                    folder = ensure_bundled_tokenizer(self._settings.model_cache_dir())
                    self._format = ChatFormat.from_dir(folder, name=BUNDLED_MODEL_ID)
                else:
                    self._format = ChatFormat.from_dir(folder)
            return self._format

    def warm_up(self) -> None:
        """Loads the tokenizer ahead of the first upload; a failure is reported there instead."""
        try:
            self.chat_format()
        except Exception:
            log.exception("could not load the validation tokenizer; uploads will retry")

    def __call__(self, path: Path) -> ValidationReport:
        return validate_file(
            path,
            self.chat_format(),
            max_issues=self._settings.validation_max_issues,
            max_line_bytes=self._settings.max_jsonl_line_bytes,
        )
