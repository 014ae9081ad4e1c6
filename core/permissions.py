from django.conf import settings
from rest_framework.permissions import BasePermission


class ApiDocsAccess(BasePermission):
    """The schema and the docs: for everyone with API_DOCS_PUBLIC, else for staff only (an admin
    session in the browser, or a staff user's token)."""

    def has_permission(self, request, view) -> bool:
        return settings.API_DOCS_PUBLIC or bool(request.user and request.user.is_staff)
