"""Strict request bodies: DRF coerces ``12`` into ``"12"`` for a CharField, ``"5"`` into ``5`` for an
IntegerField, and ignores fields it does not know. An input serializer built on ``StrictInput``
refuses both with a 400 that names the field, before any service runs."""

from collections.abc import Mapping

from rest_framework import exceptions, serializers

# (field class, JSON types it accepts, what the error says); the first match wins. bool is an int
# in Python, so numbers exclude it explicitly.
_TYPES = (
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ChoiceField, (str,), "a string"),
)


def _type_error(field: serializers.Field, value: object) -> str | None:
    if value is None:  # allow_null and required are the field's business
        return None
    for kind, accepted, name in _TYPES:
        if isinstance(field, kind):
            if isinstance(value, accepted) and not (bool not in accepted and isinstance(value, bool)):
                return None
            return f"Must be {name}."
    return None


class StrictInputMixin:
    """Unknown fields and values of the wrong JSON type are validation errors."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = {str(name): ["Unknown field."] for name in data if name not in writable}
            for name in writable & data.keys():
                if (message := _type_error(self.fields[name], data[name])) is not None:
                    errors[name] = [message]
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)


class StrictInput(StrictInputMixin, serializers.Serializer):
    pass
