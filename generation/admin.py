from django import forms
from django.contrib import admin

from . import services
from .models import SIZES, Generation, GenerationSettings


class GenerationSettingsForm(forms.ModelForm):
    # A JSON list in the database; here one checkbox per size the API knows.
    allowed_sizes = forms.MultipleChoiceField(
        choices=[(size, size) for size in SIZES], widget=forms.CheckboxSelectMultiple,
        help_text="Sizes users may ask for (width x height in pixels).")

    class Meta:
        model = GenerationSettings
        fields = ("default_model", "allowed_sizes", "steps", "max_steps", "guidance", "cost_per_generation",
                  "max_prompt_length", "enabled")


@admin.register(GenerationSettings)
class GenerationSettingsAdmin(admin.ModelAdmin):
    form = GenerationSettingsForm
    list_display = ("__str__", "default_model", "cost_per_generation", "max_prompt_length", "enabled", "updated_at")

    def has_add_permission(self, request):
        return not GenerationSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        services.generation_settings_update(**{field: getattr(obj, field) for field in form.changed_data})


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "character", "status", "cost", "created_at")
    list_filter = ("status",)
    search_fields = ("user__email", "prompt")
    list_select_related = ("user", "character")
    raw_id_fields = ("user", "character")
    readonly_fields = ("cost", "idempotency_key", "request_fingerprint", "created_at", "job_id", "started_at",
                       "enqueued_at")

    def has_add_permission(self, request):
        return False  # a generation is a user's paid request (POST /api/generations)
