"""Serving: the generation engine (one resident base model, many adapters, continuous batching),
and the content filter. Imports torch and transformers, never ``api`` or ``store``."""
