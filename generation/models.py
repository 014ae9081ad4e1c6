from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

# Every image size the API knows (the request schema's enum); the settings row picks which are on.
SIZES = ("256x256", "512x512", "768x768", "1024x1024", "1024x1792", "1792x1024")


def default_sizes() -> list[str]:
    return ["512x512", "768x768", "1024x1024"]


def validate_sizes(value) -> None:
    if not isinstance(value, list) or not value or any(size not in SIZES for size in value):
        raise ValidationError(f"A non-empty list of sizes from: {', '.join(SIZES)}.")


class GenerationSettings(models.Model):
    """A single row (pk=1): how image generation works right now."""

    default_model = models.CharField(max_length=100, default="placeholder-v1")
    allowed_sizes = models.JSONField(default=default_sizes, validators=[validate_sizes])
    steps = models.PositiveIntegerField(default=30, help_text="Default number of steps.")
    max_steps = models.PositiveIntegerField(default=100)
    guidance = models.FloatField(default=7.0)
    cost_per_generation = models.PositiveIntegerField(default=1)
    max_prompt_length = models.PositiveIntegerField(default=1000)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "generation settings"
        verbose_name_plural = "generation settings"

    def __str__(self) -> str:
        return "Generation settings"

    def save(self, *args, **kwargs):
        self.pk = 1  # a singleton
        super().save(*args, **kwargs)


class Generation(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # charged, waiting for a worker
        RUNNING = "running", "Running"  # a worker has it (job_id, since started_at)
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations")
    character = models.ForeignKey(
        "characters.Character", null=True, blank=True, on_delete=models.SET_NULL, related_name="generations"
    )
    prompt = models.TextField()
    parameters = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    cost = models.PositiveIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 (NULL = no key: outside the unique constraint)
    request_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The job: which worker's task has it and since when (another may take it once the lease is
    # over), and when it was last sent to the queue (the sweep sends again one never taken).
    job_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="generation_idempotency_key_unique_per_user",
            )
        ]
        indexes = [
            models.Index(fields=["user", "created_at"], name="generation_user_day"),
            # The sweep's look at unfinished jobs stays small however many generations there are.
            models.Index(fields=["created_at"], name="generation_unfinished",
                         condition=models.Q(status__in=["pending", "running"])),
        ]

    def __str__(self) -> str:
        return f"Generation {self.pk} ({self.status})"
