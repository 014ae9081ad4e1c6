from datetime import UTC, datetime

from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from core.cache.api import normalize_email, readahead_of
from core.http.responses import json_bytes_response
from core.http.schema import errors
from core.http.serializers import StrictInput, StrictInputMixin
from core.http.throttling import (
    LOGIN_DEVICE_HEADER,
    AccountLoginThrottle,
    AddressRateThrottle,
    login_device_issue,
)

from . import selectors, services
from .cache import USER_COINS, user_payload


class ProfileOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    display_name = serializers.CharField()
    is_active = serializers.BooleanField()
    is_staff = serializers.BooleanField()
    date_joined = serializers.DateTimeField()
    session_version = serializers.IntegerField(help_text="Changes with the password: older tokens are refused.")


class TokenPairOutput(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class TokenLoginOutput(TokenPairOutput):
    device = serializers.CharField(help_text=f"Keep it and send it back in {LOGIN_DEVICE_HEADER} on later logins: "
                                             "this device then logs in while strangers' failures hold the account.")


class EmailTokenObtainPairSerializer(StrictInputMixin, TokenObtainPairSerializer):
    """Puts the email in the token, so authentication finds the user in ``user:email:{email}``."""

    def validate(self, attrs):
        attrs[self.username_field] = normalize_email(attrs.get(self.username_field, ""))
        return super().validate(attrs)

    @classmethod
    def get_token(cls, user):
        token = super().get_token(user)
        token["email"] = user.email
        token["sv"] = user.session_version  # a password change refuses this token
        return token


def tokens_for(user) -> dict:
    refresh = EmailTokenObtainPairSerializer.get_token(user)
    return {"refresh": str(refresh), "access": str(refresh.access_token)}


class TokenInput(StrictInput):
    email = serializers.EmailField()
    password = serializers.CharField(write_only=True)


class RefreshInput(StrictInput):
    refresh = serializers.CharField()


class AccessOutput(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField(required=False, help_text="Present when refresh tokens rotate.")


@extend_schema_view(post=extend_schema(
    request=TokenInput, responses={200: TokenLoginOutput, **errors(401)}, auth=[],
    parameters=[OpenApiParameter(LOGIN_DEVICE_HEADER, str, OpenApiParameter.HEADER, required=False,
                                 description="The device token an earlier login of this account returned "
                                             "(anything else is ignored).")]))
@method_decorator(never_cache, name="dispatch")  # Cache-Control: no-store: tokens must not be kept
class TokenApi(TokenObtainPairView):
    serializer_class = EmailTokenObtainPairSerializer
    # Per client address, and failed logins per account; no global throttle classes: scope alone does nothing.
    throttle_classes = [AddressRateThrottle, AccountLoginThrottle]
    throttle_scope = "auth"

    def initial(self, request, *args, **kwargs):
        try:
            super().initial(request, *args, **kwargs)
        except Exception:  # refused before the password was checked: the attempt is given back
            self._login_attempt_end(request, "abandon")
            raise

    def post(self, request, *args, **kwargs):
        try:
            response = super().post(request, *args, **kwargs)
        except exceptions.AuthenticationFailed:
            self._login_attempt_end(request, "failed")  # it stays counted
            raise
        except Exception:
            self._login_attempt_end(request, "abandon")
            raise
        self._login_attempt_end(request, "succeeded")
        response.data["device"] = login_device_issue(email=request.data["email"])
        return response

    @staticmethod
    def _login_attempt_end(request, how: str) -> None:
        attempt = getattr(request, "login_attempt", None)
        if attempt is not None:
            getattr(attempt, how)()


class SessionTokenRefreshSerializer(StrictInputMixin, TokenRefreshSerializer):
    """Refuses refresh tokens of deleted or inactive users and those issued before a password change."""

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])  # signature, expiry, type
        current = selectors.user_session_state(user_id=refresh.payload.get(api_settings.USER_ID_CLAIM))
        if (current is None or not current["is_active"] or refresh.payload.get("sv") != current["session_version"]
                or selectors.refresh_token_revoked(jti=str(refresh.payload.get(api_settings.JTI_CLAIM, "")))):
            raise exceptions.AuthenticationFailed("This refresh token is no longer valid.", code="token_revoked")
        return super().validate(attrs)


@extend_schema_view(post=extend_schema(request=RefreshInput, responses={200: AccessOutput, **errors(401)}, auth=[]))
@method_decorator(never_cache, name="dispatch")
class TokenRefreshApi(TokenRefreshView):
    serializer_class = SessionTokenRefreshSerializer
    throttle_classes = [AddressRateThrottle]
    throttle_scope = "refresh"  # a bucket of its own: refreshing never uses up logins


@method_decorator(never_cache, name="dispatch")
class LogoutApi(APIView):
    """Ends one session: its refresh token is refused from now on. Public, like the refresh: a
    client whose access token has lapsed can still log out with its refresh token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AddressRateThrottle]
    throttle_scope = "refresh"

    def get_authenticate_header(self, request):
        # A refused token is a 401 with its challenge, as the refresh endpoint answers (not a 403).
        return f'{api_settings.AUTH_HEADER_TYPES[0]} realm="api"'

    @extend_schema(request=RefreshInput, responses={204: None, **errors(400, 401)}, auth=[],
                   summary="Log out: revoke this refresh token")
    def post(self, request):
        data = RefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:  # signature, expiry and type, as a refresh checks them
            refresh = SessionTokenRefreshSerializer.token_class(data.validated_data["refresh"])
        except TokenError:
            raise exceptions.AuthenticationFailed("This refresh token is not valid.", code="token_not_valid") from None
        services.refresh_token_revoke(
            user_id=refresh.payload[api_settings.USER_ID_CLAIM], jti=refresh.payload[api_settings.JTI_CLAIM],
            expires_at=datetime.fromtimestamp(refresh.payload["exp"], tz=UTC))
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(never_cache, name="dispatch")
class LogoutAllApi(APIView):
    """Ends every session of the user (this one included): all access and refresh tokens issued so
    far are refused at once, as after a password change."""

    @extend_schema(request=None, responses={204: None, **errors(401)}, summary="Log out everywhere")
    def post(self, request):
        services.user_end_sessions(user_id=request.user.id)
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(never_cache, name="dispatch")
class RegisterApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AddressRateThrottle]
    throttle_scope = "register"

    class InputSerializer(StrictInput):
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(min_length=8, max_length=128, write_only=True, trim_whitespace=False)
        display_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "RegisterInput"

    class OutputSerializer(serializers.Serializer):
        user = ProfileOutput()
        tokens = TokenPairOutput()

        class Meta:
            ref_name = "Registered"

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, auth=[])
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_register(**data.validated_data)
        body = {"user": user_payload(user), "tokens": tokens_for(user)}
        return Response(body, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    class InputSerializer(StrictInput):
        display_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
        email = serializers.EmailField(max_length=254, required=False)
        current_password = serializers.CharField(max_length=128, required=False, write_only=True)

        class Meta:
            ref_name = "ProfileUpdate"

    class UpdateOutputSerializer(ProfileOutput):
        tokens = TokenPairOutput(required=False, help_text="New tokens, present when the email changed.")

        class Meta:
            ref_name = "ProfileUpdated"

    cache_reads = ()  # none beyond user:email:{email}, which authentication reads anyway

    @extend_schema(responses={200: ProfileOutput})
    def get(self, request):
        # Authentication already read user:email:{email}; its payload is the body.
        return json_bytes_response(request.user.payload, request, shared=False)

    @extend_schema(request=InputSerializer, responses={200: UpdateOutputSerializer})
    @method_decorator(never_cache)  # may carry new tokens
    def patch(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(user_id=request.user.id, **data.validated_data)
        body = user_payload(user)
        if user.email != request.user.email:
            body["tokens"] = tokens_for(user)
        return Response(body)


@method_decorator(never_cache, name="dispatch")
class PasswordApi(APIView):
    class InputSerializer(StrictInput):
        current_password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        new_password = serializers.CharField(min_length=8, max_length=128, write_only=True, trim_whitespace=False)

        class Meta:
            ref_name = "PasswordChange"

    @extend_schema(request=InputSerializer, responses={200: TokenPairOutput})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_change_password(user_id=request.user.id, **data.validated_data)
        # Every token issued before is refused from now on; these are the new ones.
        return Response(tokens_for(user))


class CoinsApi(APIView):
    cache_reads = (USER_COINS,)

    @extend_schema(responses={200: inline_serializer("Coins", {"balance": serializers.IntegerField()})})
    def get(self, request):
        payload = selectors.user_coins_cached(user_id=request.user.id, readahead=readahead_of(request))
        return json_bytes_response(payload, request, shared=False)


class CoinHistoryApi(generics.ListAPIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        amount = serializers.IntegerField()
        reason = serializers.CharField()
        reference = serializers.CharField()
        balance_after = serializers.IntegerField()
        created_at = serializers.DateTimeField()

        class Meta:
            ref_name = "LedgerEntry"

    serializer_class = OutputSerializer

    def get_queryset(self):
        return selectors.ledger_list(user_id=self.request.user.id)
