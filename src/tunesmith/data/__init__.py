"""Training data, from bytes to tensors: JSONL parsing (:mod:`.jsonl`), the validation rules
(:mod:`.rules`), chat rendering with loss spans (:mod:`.chat_format`), token statistics
(:mod:`.stats`) and the whole-file check that ties them together (:mod:`.validate`).

Pure functions over files and tokenizers: no HTTP, no database. The API, the CLI and the job
validator all call :func:`tunesmith.data.validate.validate_file`."""
