import pytest
from rest_framework.test import APIClient


@pytest.fixture
def provider_client() -> APIClient:
    """The payment provider's side: no credentials."""
    return APIClient()


@pytest.fixture
def deliver(provider_client):
    """deliver(body, headers, provider="offline"): POST a webhook exactly as signed."""

    def post(body: bytes, headers: dict, provider: str = "offline"):
        meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
        return provider_client.post(f"/api/payments/webhook/{provider}", data=body,
                                    content_type="application/json", **meta)

    return post
