"""Image generation through the API: plan checks, charging, idempotency, backend failure."""

import pytest
from django.db.models import Sum

from accounts.models import CoinLedgerEntry, User
from generation.models import Generation
from subscriptions.models import DailyUsage

pytestmark = pytest.mark.django_db(transaction=True)


class FailingBackend:
    """A provider that is down: every generation fails."""

    def generate(self, *, prompt: str, parameters: dict) -> dict:
        raise RuntimeError("provider down")


def coins(user) -> int:
    return User.objects.get(pk=user.id).coin_balance


def ledger_sum(user) -> int:
    return CoinLedgerEntry.objects.filter(user_id=user.id).aggregate(s=Sum("amount"))["s"] or 0


def configure(**changes) -> None:
    from generation.services import generation_settings_update

    generation_settings_update(**changes)


def test_settings_endpoint(alice):
    body = alice.get("/api/generation/settings").json()
    assert body["enabled"] is True
    assert body["allowed_sizes"] == ["512x512", "768x768", "1024x1024"]
    assert body["cost_per_generation"] == 1


def test_create_returns_placeholder_and_charges(alice, user, characters):
    response = alice.post(
        "/api/generations",
        {"prompt": "a lighthouse at dusk", "character": "luna", "size": "768x768", "steps": 20, "seed": 7},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response["Location"] == f"/api/generations/{response.json()['id']}"
    assert response.json()["status"] == "pending" and response.json()["result"] == {}
    body = alice.get(response["Location"]).json()  # the job ran in-process (test settings)
    assert body["status"] == "completed"
    assert body["character"] == "luna"
    assert body["cost"] == 1
    assert body["parameters"]["size"] == "768x768" and body["parameters"]["steps"] == 20
    assert body["result"]["url"].startswith("https://placeholder.invalid/")
    assert (body["result"]["width"], body["result"]["height"]) == (768, 768)
    assert coins(user) == 29 and ledger_sum(user) == 29
    spend = CoinLedgerEntry.objects.get(user=user, reason="spend")
    assert spend.reference == f"generation:{body['id']}" and spend.amount == -1
    # Deterministic placeholder: the same input gives the same picture.
    again = alice.post(
        "/api/generations",
        {"prompt": "a lighthouse at dusk", "character": "luna", "size": "768x768", "steps": 20, "seed": 7},
        format="json",
    ).json()
    again = alice.get(f"/api/generations/{again['id']}").json()
    assert again["id"] != body["id"] and again["result"]["url"] == body["result"]["url"]


def test_defaults_come_from_settings(alice, user):
    configure(steps=12, guidance=4.5, default_model="m-2")
    body = alice.post("/api/generations", {"prompt": "x"}, format="json").json()
    assert body["parameters"] == {"model": "m-2", "size": "512x512", "steps": 12, "guidance": 4.5, "seed": None}


def test_short_of_coins_is_402_and_writes_nothing(make_user, client_for):
    user = make_user("poor@example.com", coins=2)
    configure(cost_per_generation=3)
    ledger_before = CoinLedgerEntry.objects.filter(user=user).count()
    response = client_for(user).post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_coins"
    assert not Generation.objects.filter(user=user).exists()
    assert CoinLedgerEntry.objects.filter(user=user).count() == ledger_before
    assert coins(user) == 2


def test_premium_character_needs_a_premium_plan(alice, user, make_user, client_for, characters):
    response = alice.post("/api/generations", {"prompt": "x", "character": "nyx"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "premium_required"
    assert not Generation.objects.exists() and coins(user) == 30
    pro = make_user("pro@example.com", plan="pro")
    assert client_for(pro).post("/api/generations", {"prompt": "x", "character": "nyx"},
                                format="json").status_code == 202


def test_daily_limit_is_403(alice, user):
    for i in range(5):  # the free plan's daily limit
        assert alice.post("/api/generations", {"prompt": f"p{i}"}, format="json").status_code == 202
    response = alice.post("/api/generations", {"prompt": "one more"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "daily_generation_limit"
    assert Generation.objects.filter(user=user).count() == 5
    assert coins(user) == 25


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "x", "size": "640x480"}, "size"),
        ({"prompt": "x", "size": ""}, "size"),
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "steps": 101}, "steps"),
        ({"prompt": "x", "steps": -5}, "steps"),
        ({"prompt": "x", "steps": 10**30}, "steps"),
        ({"prompt": "x", "steps": "many"}, "steps"),
        ({"prompt": "x", "steps": 2.5}, "steps"),
        ({"prompt": "x", "guidance": -1}, "guidance"),
        ({"prompt": "x", "guidance": 1e308}, "guidance"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": 2**64}, "seed"),
        ({"prompt": "x", "character": "nobody"}, "character"),
        ({"prompt": "x", "character": "bad name!"}, "character"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": {"a": 1}}, "prompt"),
    ],
)
def test_bad_parameters_are_400_and_write_nothing(alice, user, characters, payload, field):
    response = alice.post("/api/generations", payload, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and field in body["errors"]
    assert not Generation.objects.exists()
    assert coins(user) == 30


@pytest.fixture
def openai_images(settings):
    """The real image backend as the web process sees it: no key (it creates no client), no worker."""
    settings.GENERATION_BACKEND = "generation.backends.OpenAIImageBackend"
    settings.OPENAI_IMAGE_MODEL = "gpt-image-1"
    settings.OPENAI_API_KEY = ""
    return settings


def test_a_size_the_image_model_cannot_render_is_400_and_changes_nothing(alice, user, openai_images, no_worker):
    response = alice.post("/api/generations", {"prompt": "a cat", "size": "512x512"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["size"] == ["The image model cannot render 512x512: one of 1024x1024."]
    # A size the settings do not allow names only the sizes that work too.
    response = alice.post("/api/generations", {"prompt": "a cat", "size": "1792x1024"}, format="json")
    assert response.json()["errors"]["size"] == ["One of 1024x1024."]
    assert not Generation.objects.exists() and not DailyUsage.objects.filter(user_id=user.id).exists()
    assert coins(user) == 30 and ledger_sum(user) == 30 and no_worker() == []
    created = alice.post("/api/generations", {"prompt": "a cat", "size": "1024x1024"}, format="json")
    assert created.status_code == 202, created.content
    # No size given: the first allowed size the model renders, not the settings' first (512x512).
    default = alice.post("/api/generations", {"prompt": "a dog"}, format="json")
    assert default.status_code == 202 and default.json()["parameters"]["size"] == "1024x1024"
    assert [job["generation_id"] for job in no_worker()] == [created.json()["id"], default.json()["id"]]
    assert coins(user) == 28


def test_when_the_image_model_renders_no_allowed_size_every_post_is_400(alice, user, openai_images, no_worker):
    configure(allowed_sizes=["512x512", "768x768"])
    response = alice.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"]["size"] == [
        "No size is available: the image model renders none of the allowed sizes (512x512, 768x768)."]
    assert not Generation.objects.exists() and coins(user) == 30 and no_worker() == []


def test_a_model_openai_does_not_serve_is_not_restricted(alice, user, openai_images, no_worker):
    openai_images.OPENAI_IMAGE_MODEL = "stable-diffusion-xl"  # vLLM, LocalAI ...: any size
    response = alice.post("/api/generations", {"prompt": "a cat", "size": "768x768"}, format="json")
    assert response.status_code == 202, response.content
    assert alice.post("/api/generations", {"prompt": "x"}, format="json").json()["parameters"]["size"] == "512x512"
    assert len(no_worker()) == 2


def test_openai_sizes_are_the_sdks_own():
    """The table names only models and sizes the installed SDK knows: an SDK upgrade that drops one shows here."""
    from typing import Literal, get_args, get_origin, get_type_hints

    from openai.types.image_generate_params import ImageGenerateParamsBase
    from openai.types.image_model import ImageModel

    from generation.backends import OPENAI_IMAGE_SIZES

    sdk_sizes = {arg for part in get_args(get_type_hints(ImageGenerateParamsBase)["size"])
                 if get_origin(part) is Literal for arg in get_args(part)}
    assert OPENAI_IMAGE_SIZES and set(OPENAI_IMAGE_SIZES) <= set(get_args(ImageModel))
    assert all(sizes <= sdk_sizes for sizes in OPENAI_IMAGE_SIZES.values())
    assert OPENAI_IMAGE_SIZES["gpt-image-1"] == {"1024x1024", "1536x1024", "1024x1536"}


def test_the_default_image_model_is_one_the_sdk_lists_and_not_as_shut_down():
    """The SDK's model list ends with its notes on deprecated values: the default must not be one."""
    import inspect
    from typing import get_args

    from django.conf import settings as django_settings
    from openai.types import image_model

    from config.settings import base

    source = inspect.getsource(image_model)
    deprecated = source.partition("Deprecated values:")[2]
    assert base.OPENAI_IMAGE_MODEL == django_settings.OPENAI_IMAGE_MODEL  # no test override hides it
    assert base.OPENAI_IMAGE_MODEL in get_args(image_model.ImageModel)
    assert deprecated and f'"{base.OPENAI_IMAGE_MODEL}"' not in deprecated


def test_inactive_character_is_400(alice, user, characters):
    characters["luna"].is_active = False
    characters["luna"].save()
    response = alice.post("/api/generations", {"prompt": "x", "character": "luna"}, format="json")
    assert response.status_code == 400
    assert "character" in response.json()["errors"]


def test_disabled_generation_is_403(alice, user):
    configure(enabled=False)
    response = alice.post("/api/generations", {"prompt": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "generation_disabled"
    assert not Generation.objects.exists() and coins(user) == 30


def test_idempotency_key_replay_returns_first_response_and_charges_once(alice, user):
    first = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="abc-1")
    assert first.status_code == 202
    second = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="abc-1")
    assert second.status_code == first.status_code
    # The same generation, as it is now (its job has run since).
    assert second.json() == alice.get(f"/api/generations/{first.json()['id']}").json()
    assert Generation.objects.filter(user=user).count() == 1
    assert coins(user) == 29
    # Without the key (or with another key) it is a new generation.
    assert alice.post("/api/generations", {"prompt": "a cat"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="abc-2").json()["id"] != first.json()["id"]
    assert coins(user) == 28


def test_idempotency_key_is_per_user(alice, user, make_user, client_for):
    bob = client_for(make_user("bob@example.com"))
    a = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = bob.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_idempotency_key_with_other_parameters_is_409(alice, user):
    alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    response = alice.post("/api/generations", {"prompt": "a dog"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_mismatch"
    assert Generation.objects.filter(user=user).count() == 1
    assert coins(user) == 29


def test_idempotent_retry_returns_the_first_response_even_after_settings_and_plan_change(alice, user):
    from generation.services import generation_settings_update
    from subscriptions.services import subscription_cancel

    first = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="late")
    assert first.status_code == 202
    generation_settings_update(enabled=False)
    subscription_cancel(user_id=user.id)
    retry = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="late")
    assert retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert coins(user) == 29
    # A new request is refused: generation is switched off now.
    assert alice.post("/api/generations", {"prompt": "a cat"}, format="json").status_code == 403


def test_overlong_idempotency_key_is_400(alice, user):
    response = alice.post("/api/generations", {"prompt": "a cat"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 101)
    assert response.status_code == 400
    assert not Generation.objects.exists()


def test_failing_backend_fails_the_generation_and_refunds(alice, user, settings):
    settings.GENERATION_BACKEND = f"{__name__}.FailingBackend"
    response = alice.post("/api/generations", {"prompt": "a cat"}, format="json")
    assert response.status_code == 202
    body = alice.get(f"/api/generations/{response.json()['id']}").json()
    assert body["status"] == "failed"
    assert "error" in body["result"]
    assert coins(user) == 30 and ledger_sum(user) == 30
    assert [e.reason for e in CoinLedgerEntry.objects.filter(user=user).order_by("id")] == [
        "plan_grant", "spend", "refund"
    ]
    assert Generation.objects.get(pk=body["id"]).status == "failed"
    # A failed generation neither counts against the daily limit nor as coins spent.
    stats = alice.get("/api/subscription/stats").json()
    assert stats["generations"]["used_today"] == 0
    assert stats["coins_spent"] == 0


def test_list_is_paginated_and_only_own(alice, user, make_user, client_for):
    bob = make_user("bob@example.com", plan="plus")
    configure(cost_per_generation=0)
    for i in range(3):
        client_for(bob).post("/api/generations", {"prompt": f"bob {i}"}, format="json")
    for i in range(23):  # past the daily limit, so written directly
        Generation.objects.create(user_id=user.id, prompt=f"alice {i}", status="completed", cost=0)
    first = alice.get("/api/generations").json()
    assert first["count"] == 23
    assert len(first["results"]) == 20
    assert all(g["prompt"].startswith("alice") for g in first["results"])
    assert first["results"][0]["prompt"] == "alice 22"  # newest first
    second = alice.get(first["next"]).json()
    assert len(second["results"]) == 3
    assert client_for(bob).get("/api/generations").json()["count"] == 3
    assert alice.get("/api/generations", {"page": "nope"}).status_code == 400
    assert alice.get("/api/generations", {"page": 3}).status_code == 404
    assert alice.get("/api/generations", {"page_size": 2}).json()["results"].__len__() == 2


def test_generations_need_auth(api):
    assert api.get("/api/generations").status_code == 401
    assert api.post("/api/generations", {"prompt": "x"}, format="json").status_code == 401


@pytest.mark.parametrize("sizes", [[], ["2048x2048"], "512x512", [512]])
def test_settings_accept_only_known_sizes(db, sizes):
    from django.core.exceptions import ValidationError

    from generation.services import generation_settings_update

    with pytest.raises(ValidationError):
        generation_settings_update(allowed_sizes=sizes)


def test_status_is_cached_until_the_job_changes_it(alice, user, make_user, client_for, settings,
                                                  django_assert_num_queries):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # queued, no worker here: it stays pending
    from celery import current_app

    current_app.conf.task_always_eager = False
    try:
        created = alice.post("/api/generations", {"prompt": "a cat"}, format="json").json()
    finally:
        current_app.conf.task_always_eager = True
    url = f"/api/generations/{created['id']}"
    assert alice.get(url).json()["status"] == "pending"
    with django_assert_num_queries(0):  # a poll is a hit
        assert alice.get(url).json()["status"] == "pending"
    from generation.jobs import generation_render

    assert generation_render(generation_id=created["id"], job_id="job-1", last_try=True) == "completed"
    body = alice.get(url).json()
    assert body["status"] == "completed" and body["result"]["url"].startswith("https://placeholder.invalid/")
    # Another user's generation is as unknown as a missing one; so is a non-number or a huge id.
    bob = client_for(make_user("bob@example.com"))
    assert bob.get(url).status_code == 404
    assert alice.get("/api/generations/99999999").status_code == 404
    assert alice.get(f"/api/generations/{2**70}").status_code == 404
    assert alice.get("/api/generations/abc").status_code == 404


def test_metrics_show_queue_depth_outcomes_and_latency(alice, user, no_worker):
    from generation.jobs import generation_render

    ids = [alice.post("/api/generations", {"prompt": f"p{i}"}, format="json").json()["id"] for i in range(2)]
    text = alice.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'jobs_queue_depth{queue="generations"} 2.0' in text
    assert 'jobs_queue_depth{queue="chat"} 0.0' in text
    assert generation_render(generation_id=ids[0], job_id="j", last_try=True) == "completed"
    text = alice.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'jobs_total{job="generation",outcome="completed"}' in text
    assert 'job_latency_seconds_count{job="generation"}' in text
