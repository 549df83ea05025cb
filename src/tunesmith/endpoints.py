"""Serverless endpoints, as Azure AI Foundry has them: every deployment has a ``scoring_uri`` of
its own, ``{public base URL}/endpoints/{project id}/{deployment name}``, that takes OpenAI's chat
and completion requests for that deployment alone (``POST {scoring_uri}/v1/chat/completions``).

The URI names the deployment, so a request sent there needs no ``model`` (one that is sent is
replaced by the deployment's name). Who may call it: one of the deployment's own keys, or an API
key of its project (the admin key is one of the ``default`` project); any other key is refused
with 401 before anything is looked up, so a key of another project learns nothing about it.

The public base URL is ``Settings.public_base_url`` (``TUNESMITH_PUBLIC_BASE_URL``), by default
the address the server listens on; see :meth:`tunesmith.settings.Settings.resolved_public_base_url`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tunesmith.auth import Principal
from tunesmith.deployments.service import get_deployment
from tunesmith.errors import AuthenticationError
from tunesmith.store.tables import DeploymentRow

SCORING_PREFIX = "/endpoints"
"""Where the scoring URIs live: ``/endpoints/{project_id}/{deployment_name}``."""


def scoring_path(project_id: str, name: str) -> str:
    """The path of a deployment's endpoint (names and project ids are URL-safe: letters,
    digits, ``.``, ``_``, ``-``)."""
    return f"{SCORING_PREFIX}/{project_id}/{name}"


def scoring_uri(public_base_url: str, row: DeploymentRow) -> str:
    """The absolute URI a deployment reports; ``public_base_url`` has no trailing ``/``."""
    return public_base_url + scoring_path(row.project_id, row.name)


def admit(session: Session, principal: Principal, *, project_id: str, name: str) -> DeploymentRow:
    """The deployment behind an endpoint, if ``principal`` may call it: a key of the project
    or one of the deployment's two keys. Otherwise :class:`AuthenticationError` (401), or
    :class:`~tunesmith.errors.NotFound` for a name the caller's own project does not have. (A
    deployment key names its deployment, and a project has one deployment of a name.)"""
    keys_hint = (
        f"send one of the deployment's keys (GET /v1/deployments/{name}/keys) or an API key of "
        f"its project, as 'Authorization: <key>', 'Authorization: Bearer <key>' or 'api-key: <key>'"
    )
    if principal.project_id != project_id:
        raise AuthenticationError(
            f"This key does not open the endpoint {scoring_path(project_id, name)}: it is a key "
            f"of another project. To call the deployment '{name}', {keys_hint}."
        )
    own = principal.key_id.split(":")[1] if principal.deployment_id is not None else name
    if own != name:
        raise AuthenticationError(
            f"This key belongs to the deployment '{own}', and calls only that deployment's "
            f"endpoint; to call the deployment '{name}', {keys_hint}."
        )
    return get_deployment(session, project_id=project_id, name=name)
