"""schemathesis over the server's own OpenAPI document, against a live server with real objects.

One module-scoped server is seeded with a project, keys of each role, a file, a pending upload, a
fine-tuned job on the toy model (its model deployed), a webhook endpoint and a victim project
with a victim key. Each case is sent with a key drawn among the roles and the deployment's own
key; its path parameters are drawn either as schemathesis generates them or as those real
objects' ids (a ``before_generate_path_parameters`` hook), and an inference or deployment body
names either a generated model or the real one (``before_generate_body``), so each operation is
reached past its 404; an object a successful DELETE, archive, cancel or complete consumes is
seeded again before the next case. Inference bodies ask at most ``MAX_TOKENS`` tokens of
``MAX_CHOICES`` choices. Every response must be no server error, every error must be in
OpenAI's envelope, and declared response schemas must hold. Then: every operation in the
document answered something other than 404 at least once (the figures are printed); schema-valid
chat and completion requests are served by a deployment of their own; and the document declares
every body a route reads.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    register_toy_base,
    run_live,
)
from tests.helpers import training_file, wait_for_job
from tunesmith.api.app import create_app

MAX_EXAMPLES = 12
"""Hypothesis examples per operation (the coverage phase adds its own boundary cases)."""

REAL = "real-object-of-the-fuzzed-server"
"""A path parameter drawn as this is replaced with the real object's id before the call."""

ROLES = ["admin", "admin", "owner", "contributor", "reader", "deployment"]
"""The key each case is sent with (admin twice as often: most operations need a high role;
``deployment``: the seeded deployment's primary key, which opens only its scoring endpoint)."""


@dataclass
class Seeds:
    """The real objects of the fuzzed server, re-created when a case consumes one."""

    http: httpx.Client
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def seed_all(self) -> None:
        for name in ("victim", "file", "upload", "webhook", "deployment"):
            self.seed(name)

    def seed(self, name: str) -> None:
        http = self.http
        if name == "victim":  # a project of its own, with a key, to archive and to revoke
            project = ok(http.post("/v1/projects", json={"name": "victim"}))
            self.ids["victim_project"] = project["id"]
            self.seed("victim_key")
        elif name == "victim_key":
            project_id = self.ids["victim_project"]
            key = ok(http.post(f"/v1/projects/{project_id}/api_keys", json={"name": "victim"}))
            self.ids["victim_key"] = key["id"]
        elif name == "file":
            files = {"file": ("train.jsonl", training_file(10))}
            self.ids["file"] = ok(
                http.post("/v1/files", data={"purpose": "fine-tune"}, files=files)
            )["id"]
        elif name == "upload":
            body = {
                "filename": "big.jsonl",
                "purpose": "fine-tune",
                "bytes": 1000,
                "mime_type": "application/jsonl",
            }
            self.ids["upload"] = ok(http.post("/v1/uploads", json=body))["id"]
        elif name == "webhook":
            body = {"url": "http://127.0.0.1:9/tunesmith", "name": "fuzz"}
            self.ids["webhook"] = ok(http.post("/v1/webhook_endpoints", json=body))["id"]
        elif name == "deployment":
            body = {"name": "fuzzed", "model": self.ids["model"]}
            self.ids["deployment"] = ok(http.post("/v1/deployments", json=body))["name"]
        else:  # pragma: no cover (a typo in this file)
            raise KeyError(name)

    def key(self, role: str) -> str:
        """The secret of ``role``'s key (a deployment's keys change when regenerated)."""
        if role == "deployment":
            keys = ok(self.http.get(f"/v1/deployments/{self.ids['deployment']}/keys"))
            return str(keys["primary_key"])
        return self.keys[role]

    def path_parameters(self, path: str) -> dict[str, str]:
        """The real values of every path parameter of ``path``."""
        values = {
            "file_id": self.ids["file"],
            "upload_id": self.ids["upload"],
            "job_id": self.ids["job"],
            "model_id": self.ids["model"],
            "webhook_endpoint_id": self.ids["webhook"],
            "deployment_name": self.ids["deployment"],
            "key_id": self.ids["victim_key"],
            # a deployment's scoring URI names its own project; the rest act on the victim
            "project_id": self.ids["project"]
            if path.startswith("/endpoints/")
            else self.ids["victim_project"],
        }
        return {name: values[name] for name in _names(path)}

    def consumed(self, method: str, path: str, status: int) -> None:
        """Seeds again what a successful case just used up."""
        if status >= 400:
            return
        consumers = {
            ("DELETE", "/v1/files/{file_id}"): "file",
            ("POST", "/v1/uploads/{upload_id}/complete"): "upload",
            ("POST", "/v1/uploads/{upload_id}/cancel"): "upload",
            ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint_id}"): "webhook",
            ("DELETE", "/v1/deployments/{deployment_name}"): "deployment",
            ("POST", "/v1/projects/{project_id}/archive"): "victim",
            ("DELETE", "/v1/projects/{project_id}/api_keys/{key_id}"): "victim_key",
        }
        name = consumers.get((method, path))
        if name is not None:
            self.seed(name)


def _names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Fuzzed:
    live: LiveServer
    seeds: Seeds
    statuses: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, toy_model_dir: Path) -> Iterator[Fuzzed]:
    settings_ = jobs_settings_for(
        tmp_path_factory.mktemp("fuzz-home"),
        toy_model_dir,
        webhook_allow="127.0.0.1",  # the seeded endpoint's receiver (nothing listens there)
        webhook_max_attempts=1,
    )
    app = create_app(settings_)
    register_toy_base(app, toy_model_dir)
    env = pytest.MonkeyPatch()
    env.setenv("OMP_NUM_THREADS", "1")  # the job process's steps are tiny
    try:
        for live in run_live(app, settings_):
            with live.http() as http:
                seeds = Seeds(http)
                seeds.ids["project"] = ok(http.get("/v1/me"))["project"]["id"]
                for role in ("owner", "contributor", "reader"):
                    key = ok(
                        http.post(
                            f"/v1/projects/{seeds.ids['project']}/api_keys",
                            json={"name": role, "role": role},
                        )
                    )
                    seeds.keys[role] = key["value"]
                seeds.keys["admin"] = ADMIN_KEY
                seeds.seed("file")
                job = ok(
                    http.post(
                        "/v1/fine_tuning/jobs",
                        json={
                            "model": TOY_BASE,
                            "training_file": seeds.ids["file"],
                            "method": {
                                "type": "supervised",
                                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}},
                            },
                        },
                    )
                )
                done = wait_for_job(live.client(), job["id"], {"succeeded"}, timeout=300)
                seeds.ids["job"] = done.id
                seeds.ids["model"] = done.fine_tuned_model
                seeds.seed_all()
                env.undo()
                yield Fuzzed(live, seeds)
    finally:
        env.undo()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> Any:
    config = SchemathesisConfig.from_dict(
        {"generation": {"max-examples": MAX_EXAMPLES}, "phases": {"stateful": {"enabled": False}}}
    )
    schema = schemathesis.openapi.from_url(f"{fuzzed.live.url}/openapi.json", config=config)

    @schema.hook
    def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
        names = _names(context.operation.path)
        return st.one_of(strategy, st.just(dict.fromkeys(names, REAL)))

    @schema.hook
    def before_generate_body(context: Any, strategy: Any) -> Any:
        operation = (context.operation.method.upper(), context.operation.path)
        if operation not in REAL_MODEL:
            return strategy
        return st.one_of(strategy, strategy.map(_naming_real_model))

    @schema.hook
    def before_generate_case(context: Any, strategy: Any) -> Any:
        return st.tuples(strategy, st.sampled_from(ROLES)).map(_with_role)

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the test node through ``_nodeid``, which pytest 9.2 no longer
    has (``nodeid`` is derived from ``_id``): give it the attribute it reads and writes."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


REAL_MODEL = {
    ("POST", "/v1/chat/completions"): "deployment",
    ("POST", "/v1/completions"): "deployment",
    ("POST", "/v1/deployments"): "model",
}
"""The bodies whose ``model`` is drawn as generated or as a real object (its seed's name)."""

CALL_TIMEOUT = 30
"""Seconds a case may wait for its answer (generous: a case takes milliseconds; one stalled
past schemathesis' 10 s once on this loaded machine, see docs/RELIABILITY.md)."""

MAX_TOKENS = 8
MAX_CHOICES = 2
"""What an inference case may ask of the toy model at most (larger asks are lowered to these)."""


def _naming_real_model(body: Any) -> Any:
    return {**body, "model": REAL} if isinstance(body, dict) else body


def bounded(path: str, body: Any) -> Any:
    """An inference body that asks at most ``MAX_TOKENS`` tokens of ``MAX_CHOICES`` choices (the
    fuzzed server runs the toy model on the test's CPUs); other bodies as they are."""
    if not path.endswith("/completions") or not isinstance(body, dict):
        return body
    body = dict(body)
    for name, most in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS)):
        if _is_int(body.get(name)) and body[name] > most:
            body[name] = most
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = MAX_TOKENS
    if _is_int(body.get("n")) and body["n"] > MAX_CHOICES:
        body["n"] = MAX_CHOICES
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _with_role(pair: tuple[Any, str]) -> Any:
    case, role = pair
    case.headers = {**(case.headers or {}), ROLE_HEADER: role}
    return case


ROLE_HEADER = "x-fuzz-role"
"""Carries the role a case is sent with, from generation to the call (then removed)."""


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzed_operations_answer_without_server_errors(case: Any, fuzzed: Fuzzed) -> None:
    seeds = fuzzed.seeds
    role = (case.headers or {}).pop(ROLE_HEADER, "admin")
    path = case.operation.path
    if case.path_parameters and REAL in case.path_parameters.values():
        case.path_parameters = seeds.path_parameters(path)
    method = case.method.upper()
    if isinstance(case.body, dict) and case.body.get("model") == REAL:
        case.body = {**case.body, "model": seeds.ids[REAL_MODEL[(method, path)]]}
    case.body = bounded(path, case.body)
    response = case.call(
        headers={"Authorization": f"Bearer {seeds.key(role)}"}, timeout=CALL_TIMEOUT
    )
    fuzzed.statuses[f"{method} {path}"].append(response.status_code)
    seeds.consumed(method, path, response.status_code)
    assert_well_answered(case, response)


def assert_well_answered(case: Any, response: Any) -> None:
    """No server error; an error in the envelope; a success as the document declares it."""
    where = f"{case.method.upper()} {case.operation.path}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert_envelope(response)
    else:
        case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])


def assert_envelope(response: Any) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def test_every_operation_was_reached_past_404(
    fuzzed: Fuzzed,
    api_schema: Any,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not fuzzed.statuses:
        pytest.skip("the fuzz test did not run in this session")
    operations = [
        f"{result.ok().method.upper()} {result.ok().path}"
        for result in api_schema.get_all_operations()
    ]
    reached = {
        op: Counter(fuzzed.statuses[op])
        for op in operations
        if any(status != 404 for status in fuzzed.statuses.get(op, []))
    }
    cases = sum(len(statuses) for statuses in fuzzed.statuses.values())
    lines = [
        f"fuzz: {cases} cases, {len(reached)} of {len(operations)} operations reached past 404"
    ]
    if request.config.get_verbosity() > 0:
        lines += [f"  {op}: {dict(sorted(statuses.items()))}" for op, statuses in reached.items()]
    with capsys.disabled():
        print("\n" + "\n".join(lines))  # noqa: T201 (the figures, on every run)
    unreached = [op for op in operations if op not in reached]
    assert unreached == [], unreached


SERVED_EXAMPLES = 15
"""Schema-valid requests per inference operation sent to a deployment that serves them."""


@pytest.fixture(scope="module")
def served_deployment(fuzzed: Fuzzed) -> str:
    """A deployment of the toy base model, its filter off, that the fuzzed cases never name."""
    with fuzzed.live.http() as http:
        body = {"name": "served", "model": TOY_BASE, "content_filter": False}
        return str(ok(http.post("/v1/deployments", json=body))["name"])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_schema_valid_inference_requests_are_served_by_a_real_deployment(
    served_deployment: str, api_schema: Any, path: str
) -> None:
    """Generated requests seldom name a deployment with a conversation the rules accept, so the
    sampling fields (``n``, ``stop``, ``seed``, ``tools``, ``response_format``, ...) seldom reach
    the engine above: here every request the document allows is sent to a deployment of its
    own (nothing above changes it), with a plain user turn and at most ``MAX_TOKENS`` tokens."""
    name = served_deployment
    operation = api_schema[path]["POST"]
    statuses: list[int] = []

    @given(case=operation.as_strategy(), text=st.text(min_size=1, max_size=40))
    @settings(
        max_examples=SERVED_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def served(case: Any, text: str) -> None:
        body = dict(case.body) if isinstance(case.body, dict) else {}
        body["model"] = name
        if path.endswith("/chat/completions"):
            body["messages"] = [{"role": "user", "content": text}]
        elif not body.get("prompt"):
            body["prompt"] = text
        case.body = bounded(path, body)
        response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=CALL_TIMEOUT)
        statuses.append(response.status_code)
        assert_well_answered(case, response)

    served()
    assert 200 in statuses, statuses


BODILESS = {
    "POST /v1/projects/{project_id}/archive",
    "POST /v1/uploads/{upload_id}/cancel",
    "POST /v1/fine_tuning/jobs/{job_id}/cancel",
    "POST /v1/fine_tuning/jobs/{job_id}/pause",
    "POST /v1/fine_tuning/jobs/{job_id}/resume",
}
"""The operations that write and take no body."""


def test_the_document_declares_every_body_a_route_reads(live: LiveServer) -> None:
    """Routes that parse their own body (chat, completions, moderations; multipart files and
    parts) declare it too, so the fuzzer sends them bodies and clients see their fields."""
    document = live.http().get("/openapi.json").json()
    undeclared = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch") and "requestBody" not in operation
    ]
    assert sorted(undeclared) == sorted(BODILESS)
    schemas = document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = chat["content"]["application/json"]["schema"]["$ref"]
    assert "messages" in schemas[ref.rsplit("/", 1)[1]]["properties"]
    form = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["file", "purpose"]
