"""Schemathesis against /api/schema through the WSGI app: no 5xx, bodies and status codes as documented."""

from collections import Counter

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture
def app():
    return get_wsgi_application()


@pytest.fixture
def bearer(make_user, characters):
    """A pro user with plenty of coins, so generation and premium chat can succeed too."""
    from accounts.apis import tokens_for

    user = make_user("fuzz@example.com", coins=5000, plan="pro")
    return {"Authorization": f"Bearer {tokens_for(user)['access']}"}


def fresh_bearer() -> dict:
    """A token issued now: the positive run ends by logging the fuzz user out everywhere."""
    from accounts.apis import tokens_for
    from accounts.models import User

    return {"Authorization": f"Bearer {tokens_for(User.objects.get(email='fuzz@example.com'))['access']}"}


def strategies(operation, mode: GenerationMode):
    """Free generation, plus real characters in the path: random names only ever reach the 404s."""
    yield operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    for pinned in ("character", "name") if mode is GenerationMode.POSITIVE else ():
        if pinned in names:
            for character in ("luna", "nyx"):
                yield operation.as_strategy(generation_mode=mode, path_parameters={pinned: character})


def runner(operation, strategy, headers: dict, seen: dict, max_examples: int):
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: a failure is reproducible
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(headers=headers)
        seen.setdefault(operation.label, Counter())[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


def fuzz(schema, headers: dict, mode: GenerationMode, max_examples: int) -> tuple[list[str], dict]:
    failures: list[str] = []
    seen: dict = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # every endpoint of the API is in the schema
    # Logging out everywhere revokes the token the other operations use: last.
    operations.sort(key=lambda operation: operation.label == "POST /api/auth/logout/all")

    for operation in operations:
        for strategy in strategies(operation, mode):
            run = runner(operation, strategy, headers, seen, max_examples)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                continue  # negative mode: an operation without inputs has nothing to break
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"{operation.label} [{mode.value}]: {exc}"[:3000])
    return failures, seen


def test_api_conforms_to_its_schema(app, bearer):
    schema = schemathesis.openapi.from_wsgi("/api/schema?format=json", app)
    failures, seen = fuzz(schema, bearer, GenerationMode.POSITIVE, max_examples=25)
    negative_failures, _ = fuzz(schema, fresh_bearer(), GenerationMode.NEGATIVE, max_examples=10)
    assert not failures + negative_failures, "\n\n".join(failures + negative_failures)
    # The fuzzing reached the happy paths, not only the error responses.
    for label, status in [("POST /api/auth/register", 201), ("POST /api/generations", 202),
                          ("GET /api/characters/{name}", 200), ("GET /api/chat/{character}/sessions", 200),
                          ("POST /api/chat/{character}/sessions/{session}/messages", 202), ("PATCH /api/me", 200)]:
        assert seen[label][status] > 0, (label, seen[label])


def test_schema_and_docs_are_served(api):
    response = api.get("/api/schema?format=json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    # Errors are documented with their body, e.g. the 402 of a generation.
    generation = document["paths"]["/api/generations"]["post"]["responses"]
    assert {"202", "400", "401", "402", "403", "409"} <= set(generation)
    assert generation["402"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert api.get("/api/docs").status_code == 200


def test_schema_states_the_constraints_inputs_enforce(api):
    from generation.models import default_sizes

    document = api.get("/api/schema?format=json").json()
    schemas = document["components"]["schemas"]
    assert schemas["ImageSize"]["enum"] == default_sizes()  # what the settings accept, not every known size
    generation = schemas["GenerationInputRequest"]
    assert generation["properties"]["size"]["allOf"] == [{"$ref": "#/components/schemas/ImageSize"}]
    # Every request body of a write endpoint refuses unknown fields, and says so.
    for path, method in [("/api/auth/register", "post"), ("/api/auth/token", "post"), ("/api/auth/token/refresh", "post"),
                         ("/api/me", "patch"), ("/api/me/password", "post"), ("/api/subscription", "post"),
                         ("/api/generations", "post"), ("/api/chat/{character}/sessions/{session}/messages", "post"),
                         ("/api/payments/offline/checkout/{ref}", "post"), ("/api/subscription/cancel", "post")]:
        ref = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert schemas[ref.rsplit("/", 1)[1]]["additionalProperties"] is False, path
    page_size = next(p for p in document["paths"]["/api/generations"]["get"]["parameters"] if p["name"] == "page_size")
    assert page_size["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert "400" in document["paths"]["/api/generations"]["get"]["responses"]


def test_the_image_size_enum_follows_the_generation_settings_and_the_image_model(api, settings):
    from generation.models import GenerationSettings

    GenerationSettings.objects.update_or_create(pk=1, defaults={"allowed_sizes": ["1024x1792", "256x256"]})
    enum = api.get("/api/schema?format=json").json()["components"]["schemas"]["ImageSize"]["enum"]
    assert enum == ["1024x1792", "256x256"]
    # Only the sizes the configured image model renders too; a model OpenAI does not serve takes any.
    settings.GENERATION_BACKEND, settings.OPENAI_API_KEY = "generation.backends.OpenAIImageBackend", ""
    GenerationSettings.objects.filter(pk=1).update(allowed_sizes=["512x512", "1024x1792", "1024x1024"])
    for model, expected in [("gpt-image-1", ["1024x1024"]),
                            ("stable-diffusion-xl", ["512x512", "1024x1792", "1024x1024"])]:
        settings.OPENAI_IMAGE_MODEL = model
        enum = api.get("/api/schema?format=json").json()["components"]["schemas"]["ImageSize"]["enum"]
        assert enum == expected, model


def test_the_schema_documents_what_the_server_checks(api):
    document = api.get("/api/schema?format=json").json()
    key = next(p for p in document["paths"]["/api/generations"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["schema"] == {"type": "string", "minLength": 1, "maxLength": 100}
    webhook = document["paths"]["/api/payments/webhook/{provider}"]["post"]["responses"]
    assert webhook["400"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert {"404", "503"} <= set(webhook)
    assert "409" in document["paths"]["/api/subscription"]["post"]["responses"]
