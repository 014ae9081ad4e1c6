from django.conf import settings
from rest_framework.permissions import BasePermission


class ApiDocsAccess(BasePermission):
    """The schema and the docs: for everyone with API_DOCS_PUBLIC, else for staff only (a staff
    user's bearer token; /api/ runs without the session middleware)."""

    def has_permission(self, request, view) -> bool:
        return settings.API_DOCS_PUBLIC or bool(request.user and request.user.is_staff)
