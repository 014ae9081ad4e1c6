from django.db import models


class Character(models.Model):
    name = models.SlugField(max_length=64, unique=True, help_text="Used in URLs and cache keys.")
    display_name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    greeting = models.TextField(blank=True)
    persona_prompt = models.TextField(blank=True, help_text="Private: shapes replies, never shown by the API.")
    avatar_url = models.URLField(blank=True)
    is_premium = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "name"]

    def __str__(self) -> str:
        return self.display_name or self.name
