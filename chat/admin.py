from django.contrib import admin

from .models import ChatMessage, ChatSession


class MessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ("seq", "role", "content", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("session_id", "user", "character", "last_seq", "updated_at")
    search_fields = ("user__email", "session_id", "character__name")
    list_select_related = ("user", "character")
    raw_id_fields = ("user", "character")
    readonly_fields = ("last_seq",)
    inlines = [MessageInline]

    def has_add_permission(self, request):
        return False  # a session starts with a user's first message
