"""tunesmith: a self-hosted fine-tuning foundry with an OpenAI-compatible API.

Importing the package has no side effects; build the server with
:func:`tunesmith.api.app.create_app`.
"""

__version__ = "0.1.0"
