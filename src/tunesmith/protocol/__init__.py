"""OpenAI wire models (pydantic), one module per resource. Field names, ``object`` literals,
status strings and timestamps (Unix seconds) follow OpenAI exactly; our extensions follow the
same style. Database rows are translated into these by the services, never exposed."""
