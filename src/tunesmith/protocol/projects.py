"""Projects and their API keys, in the shapes of OpenAI's Administration API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["owner", "contributor", "reader"]


class Project(BaseModel):
    id: str
    """``proj_…``; the admin key's own project is ``proj_default``."""
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int
    archived_at: int | None = None
    status: Literal["active", "archived"]


class CreateProjectRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class ProjectApiKey(BaseModel):
    id: str
    """``key_…``"""
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    name: str
    role: Role | Literal["admin"]
    redacted_value: str
    created_at: int
    last_used_at: int | None = None
    project_id: str
    value: str | None = None
    """The secret itself: present only in the response that created the key."""


class CreateApiKeyRequest(BaseModel):
    name: str = Field(default="", max_length=200)
    role: Role = "contributor"


class ProjectApiKeyDeleted(BaseModel):
    id: str
    object: Literal["organization.project.api_key.deleted"] = "organization.project.api_key.deleted"
    deleted: bool = True


class Identity(BaseModel):
    """``GET /v1/me`` (extension): who the caller's key is, for a client's sign-in."""

    object: Literal["identity"] = "identity"
    key_id: str
    """The key's ``key_…`` id; ``"admin"`` for a configured ``TUNESMITH_ADMIN_KEY``."""
    role: Role | Literal["admin"]
    project: Project
    """The project the key acts in (the admin key's is ``proj_default``)."""
