from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from . import signals
        from .models import ChatMessage

        post_save.connect(signals.invalidate_message, sender=ChatMessage, dispatch_uid="chat_message_saved")
        post_delete.connect(signals.invalidate_message, sender=ChatMessage, dispatch_uid="chat_message_deleted")
