"""What a newcomer reads about the API: the README's example requests (one for every operation of
the OpenAPI schema, each body valid for its endpoint's request schema, so an example cannot go
stale), Swagger's tags, how a chat starts."""

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

README = (Path(settings.BASE_DIR) / "README.md").read_text()
UNDOCUMENTED = {"/api/schema", "/api/docs"}  # the schema and its UI themselves


def examples() -> list[tuple[str, str, object]]:
    block = README.split("<!-- examples:start -->")[1].split("<!-- examples:end -->")[0]
    found = []
    for line in block.splitlines():
        if not line.startswith("curl "):
            continue
        words = shlex.split(line)
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        url = next(w for w in words if w.startswith("$B/"))
        body = words[words.index("-d") + 1] if "-d" in words else None
        found.append((method, "/api/" + url.removeprefix("$B/"), body))
    return found


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict:
    from django.db import connection

    with django_db_blocker.unblock():  # the ImageSize enum follows the generation settings' row
        try:
            return SchemaGenerator().get_schema(request=None, public=True)
        finally:
            connection.close()  # left open, a later test without database access would trip on it


def operation_for(schema: dict, method: str, path: str) -> dict | None:
    for template, operations in schema["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in operations:
            return operations[method.lower()]
    return None


def test_every_operation_has_an_example(schema):
    listed = examples()
    assert len(listed) >= 25
    missing = []
    for template, operations in schema["paths"].items():
        if template in UNDOCUMENTED:
            continue
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        for method in operations:
            if not any(m.lower() == method and re.fullmatch(pattern, path) for m, path, _ in listed):
                missing.append(f"{method.upper()} {template}")
    assert not missing, f"README examples lack: {missing}"


@pytest.mark.parametrize("method, path, body", [e for e in examples() if e[2] and e[2].startswith("{")],
                         ids=lambda value: value if isinstance(value, str) and value.startswith(("/", "G", "P")) else "")
def test_each_example_body_is_valid_for_its_endpoint(schema, method, path, body):
    operation = operation_for(schema, method, path)
    assert operation is not None, f"{method} {path} is no operation of the schema"
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(json.loads(body), {**request_schema, "components": schema["components"]})


def test_the_check_catches_a_wrong_field(schema):
    operation = operation_for(schema, "POST", "/api/generations")
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prompt": "x", "sise": "1024x1024"}, {**request_schema, "components": schema["components"]})


def test_one_swagger_tag_per_area(schema):
    tags = {template: {tag for op in ops.values() for tag in op["tags"]} for template, ops in schema["paths"].items()}
    assert tags["/api/generations"] == tags["/api/generation/settings"] == {"generation"}


def test_the_schema_says_how_to_start_a_chat(schema):
    messages = schema["paths"]["/api/chat/{character}/sessions/{session}/messages"]
    session = next(p for p in messages["post"]["parameters"] if p["name"] == "session")
    assert "Chosen by the client" in session["description"] and session["schema"]["pattern"]
    assert "first message" in messages["post"]["description"]
    assert "POST the first message" in schema["paths"]["/api/chat/{character}/sessions"]["get"]["description"]


@pytest.mark.django_db(transaction=True)
def test_posting_to_the_sessions_url_says_how_to_start_a_chat(alice):
    response = alice.post("/api/chat/luna/sessions", {}, format="json")
    assert response.status_code == 405
    assert "/api/chat/luna/sessions/{session}/messages" in response.json()["detail"]
