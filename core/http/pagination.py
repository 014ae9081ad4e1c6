import re

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination

_NUMBER = re.compile(r"[0-9]{1,10}\Z")
MAX_PAGE = 2**31 - 1


class Pagination(PageNumberPagination):
    """DRF's page numbers, strict: a ``page`` or ``page_size`` that is not an integer in range is a
    400 naming the parameter (DRF would quietly fall back to the default size or clamp it, and
    answer a malformed page with a 404). A page past the end is still a 404."""

    page_size_query_param = "page_size"
    max_page_size = 100
    last_page_strings = ()  # the schema says integer

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        for name, upper in ((self.page_query_param, MAX_PAGE), (self.page_size_query_param, self.max_page_size)):
            raw = request.query_params.get(name)
            if raw is not None and not (_NUMBER.match(raw) and 1 <= int(raw) <= upper):
                errors[name] = [f"An integer from 1 to {upper}."]
        if errors:
            raise exceptions.ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.page_query_param: MAX_PAGE, self.page_size_query_param: self.max_page_size}
        for parameter in parameters:
            parameter["schema"].update(minimum=1, maximum=bounds[parameter["name"]])
        return parameters
