import json
from decimal import Decimal

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.http.schema import errors
from core.http.serializers import StrictInput
from subscriptions import apis as subscriptions_apis
from subscriptions.cache import subscription_payload
from subscriptions.services import Change

from . import selectors, services
from .models import Payment
from .providers import SignatureInvalid, provider_get
from .providers.offline import CARD_DECLINES, CARD_OK, OfflineProvider
from .providers.offline import HEADER as OFFLINE_HEADER


class CheckoutOutput(serializers.Serializer):
    id = serializers.IntegerField()
    provider = serializers.CharField()
    status = serializers.ChoiceField(choices=Payment.Status.choices)
    plan = serializers.CharField()
    amount = serializers.CharField()
    currency = serializers.CharField()
    checkout_url = serializers.URLField(help_text="Where the user pays.")
    checkout_id = serializers.CharField(help_text="The provider's id of the checkout.")


class PendingCheckoutOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["payment_required"])
    checkout = CheckoutOutput()
    subscription = subscriptions_apis.SubscriptionOutput(help_text="Unchanged until the payment is reported.")


class SubscriptionApi(subscriptions_apis.SubscriptionApi):
    """GET: the current subscription. POST: ask for a plan. The free plan starts now; a cheaper
    plan waits for the period end; a paid plan answers 202 with a checkout and changes nothing
    until the provider's signed event reports the payment."""

    class InputSerializer(StrictInput):
        plan = serializers.SlugField(max_length=32)

        class Meta:
            ref_name = "SubscribeInput"

    @extend_schema(
        request=InputSerializer,
        responses={200: subscriptions_apis.SubscriptionOutput, 201: subscriptions_apis.SubscriptionOutput,
                   202: PendingCheckoutOutput, **errors(409, 503)},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change, _, payment = services.subscription_request(
            user_id=request.user.id, plan_code=data.validated_data["plan"], base_url=request.build_absolute_uri("/")
        )
        body = subscription_payload(user_id=request.user.id)
        if payment is not None:
            return Response({"status": change.value, "checkout": selectors.checkout_payload(payment),
                             "subscription": body}, status=status.HTTP_202_ACCEPTED)
        return Response(body, status=201 if change in (Change.STARTED, Change.RESUMED) else 200)


class WebhookApi(APIView):
    """Provider events. No authentication: the signature is the proof; CSRF does not apply."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []  # the signature covers the raw bytes: read request.body, never re-encode

    @extend_schema(request=None, responses={200: inline_serializer("WebhookOutput", {
        "received": serializers.BooleanField(), "outcome": serializers.CharField()}),
        **errors(400, 404, 503)})
    def post(self, request, provider: str):
        try:
            outcome = services.webhook_receive(provider_name=provider, body=request.body, headers=request.headers)
        except SignatureInvalid as exc:
            return Response({"detail": f"Invalid webhook: {exc}", "code": "invalid_signature"},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response({"received": True, "outcome": outcome})


class OfflineCheckoutApi(APIView):
    """The offline provider's checkout "page" (PAYMENT_PROVIDER=offline only): look at it (GET),
    then pay or decline (POST). Paying sends the provider's signed event to our webhook code, as
    Stripe would; with ``deliver: false`` you get the signed event to POST to the webhook yourself."""

    authentication_classes: list = []  # like a provider's page: whoever holds the URL pays
    permission_classes = [AllowAny]

    class InputSerializer(StrictInput):
        outcome = serializers.ChoiceField(choices=["paid", "declined", "refunded"],
                                          help_text="refunded: the provider refunds the paid checkout.")
        card = serializers.ChoiceField(choices=["ok", "declines_renewals"], default="ok",
                                       help_text="declines_renewals: this card fails every later renewal charge.")
        amount = serializers.DecimalField(max_digits=8, decimal_places=2, min_value=Decimal("0.01"), required=False,
                                          help_text="With refunded: the total refunded so far (default: all of it).")
        deliver = serializers.BooleanField(default=True)

        class Meta:
            ref_name = "OfflineCheckoutInput"

        def validate(self, attrs):
            if "amount" in attrs and attrs["outcome"] != "refunded":
                raise serializers.ValidationError({"amount": ["Only a refund has an amount."]})
            return attrs

    def _payment(self, ref: str) -> Payment:
        provider_get("offline")  # 404 unless the offline provider is the one in use
        return selectors.offline_checkout_get(ref=ref)

    @extend_schema(responses={200: CheckoutOutput})
    def get(self, request, ref: str):
        return Response(selectors.checkout_payload(self._payment(ref)))

    @extend_schema(request=InputSerializer, responses={200: inline_serializer("OfflineCheckoutResult", {
        "delivered": serializers.BooleanField(), "outcome": serializers.CharField(allow_null=True),
        "event": serializers.DictField(), "body": serializers.CharField(help_text="The exact bytes that were signed."),
        "signature": serializers.CharField(help_text="The Offline-Signature header.")}), **errors(409)})
    def post(self, request, ref: str):
        payment = self._payment(ref)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if payment.status == Payment.Status.FAILED and payment.failure_reason == services.CHECKOUT_REPLACED:
            return Response({"detail": "This checkout was replaced by a newer one; it can no longer be paid.",
                             "code": "checkout_closed"}, status=status.HTTP_409_CONFLICT)
        outcome = data.validated_data["outcome"]
        if outcome == "refunded":
            body, headers = OfflineProvider.event_build(payment=payment, type="payment.refunded",
                                                        amount=data.validated_data.get("amount"))
        else:
            paid = outcome == "paid"
            body, headers = OfflineProvider.event_build(
                payment=payment, type="payment.succeeded" if paid else "payment.failed",
                customer=(CARD_DECLINES if data.validated_data["card"] == "declines_renewals" else CARD_OK) if paid else "",
                reason="" if paid else "card declined",
            )
        outcome = None  # what the webhook made of it, when delivered here
        if data.validated_data["deliver"]:
            outcome = services.webhook_receive(provider_name="offline", body=body, headers=headers)
        return Response({"delivered": outcome is not None, "outcome": outcome,
                         "event": json.loads(body), "body": body.decode(), "signature": headers[OFFLINE_HEADER]})
