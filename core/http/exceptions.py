"""API errors: every failure is a JSON body with a stable ``code`` and a readable ``detail``."""

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler


class PaymentRequired(exceptions.APIException):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_detail = "Not enough coins."
    default_code = "insufficient_coins"


class PlanForbids(exceptions.PermissionDenied):
    default_detail = "Your plan does not allow this."
    default_code = "plan_forbids"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc))
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(data, dict) and "detail" in data and not isinstance(codes, (dict, list)):
            data = {"detail": data["detail"], "code": codes}
        elif not isinstance(exc, exceptions.ValidationError) and isinstance(data, dict) and isinstance(
            data.get("detail"), str
        ):  # simplejwt's token errors: a dict of detail, code and messages
            data = {"detail": data["detail"], "code": str(data.get("code") or exc.default_code)}
        else:
            data = {"detail": "Invalid input.", "code": "invalid", "errors": data}
    response.data = data
    return response
