from django.conf import settings
from django.db import models
from django.utils import timezone


class ChatSession(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions")
    character = models.ForeignKey("characters.Character", on_delete=models.CASCADE, related_name="chat_sessions")
    session_id = models.CharField(max_length=64, help_text="Chosen by the client.")
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "character", "session_id"], name="chat_session_unique_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} with {self.character}: {self.session_id}"


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveIntegerField(help_text="Strict order within the session.")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # A user message: when the reply sweep last sent its reply's job again (it waits
    # CHAT_REPLY_REQUEUE_AFTER before the next, so a long outage is not one job per sweep).
    reply_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="chat_message_seq_unique")]
        indexes = [
            models.Index(fields=["user", "created_at"], name="chat_message_user_day"),
            # The reply sweep looks at recent user messages only.
            models.Index(fields=["created_at"], name="chat_message_user_recent", condition=models.Q(role="user")),
        ]

    def __str__(self) -> str:
        return f"message {self.seq} ({self.role})"
