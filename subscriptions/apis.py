from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.cache.api import readahead_of
from core.http.responses import json_bytes_response
from core.http.serializers import StrictInput

from . import selectors, services
from .cache import SUBSCRIPTION_STATS, SUBSCRIPTION_USER, subscription_payload


class PlanOutput(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(max_digits=8, decimal_places=2, coerce_to_string=True)
    coins_per_period = serializers.IntegerField()
    daily_generation_limit = serializers.IntegerField()
    daily_message_limit = serializers.IntegerField()
    includes_premium = serializers.BooleanField()


class SubscriptionOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["active", "cancelled", "past_due", "expired", "none"])
    plan = PlanOutput(allow_null=True)
    current_period_start = serializers.DateTimeField(allow_null=True)
    current_period_end = serializers.DateTimeField(allow_null=True)
    auto_renew = serializers.BooleanField()
    next_plan = serializers.CharField(allow_null=True, help_text="A downgrade that starts at the period end.")


class UsageOutput(serializers.Serializer):
    used_today = serializers.IntegerField()
    daily_limit = serializers.IntegerField()
    remaining = serializers.IntegerField()


class StatsOutput(serializers.Serializer):
    plan = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    day = serializers.DateField()
    current_period_start = serializers.DateTimeField(allow_null=True)
    current_period_end = serializers.DateTimeField(allow_null=True)
    days_left = serializers.IntegerField()
    generations = UsageOutput()
    messages = UsageOutput()
    coins_spent = serializers.IntegerField()


class PlanListApi(generics.ListAPIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    pagination_class = None
    serializer_class = PlanOutput

    def get_queryset(self):
        return selectors.plan_list()


class SubscriptionApi(APIView):
    """GET the current subscription. Asking for a plan (POST) is payments.apis.SubscriptionApi:
    a paid plan goes through a checkout first."""

    cache_reads = (SUBSCRIPTION_USER,)

    @extend_schema(responses={200: SubscriptionOutput})
    def get(self, request):
        payload = selectors.subscription_cached(user_id=request.user.id, readahead=readahead_of(request))
        return json_bytes_response(payload, request, shared=False)


class SubscriptionCancelApi(APIView):
    class InputSerializer(StrictInput):
        """No fields: an empty body or ``{}``. Anything in it is a 400, not a cancel."""

        class Meta:
            ref_name = "SubscriptionCancelInput"

    @extend_schema(request=InputSerializer, responses={200: SubscriptionOutput})
    def post(self, request):
        self.InputSerializer(data=request.data).is_valid(raise_exception=True)
        services.subscription_cancel(user_id=request.user.id)
        body = subscription_payload(user_id=request.user.id)
        return Response(body)


class SubscriptionStatsApi(APIView):
    cache_reads = (SUBSCRIPTION_STATS,)

    @extend_schema(responses={200: StatsOutput})
    def get(self, request):
        payload = selectors.subscription_stats_cached(user_id=request.user.id, readahead=readahead_of(request))
        return json_bytes_response(payload, request, shared=False)
