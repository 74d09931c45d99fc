"""One translation from the services' Django errors to the API's DRF errors."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from rest_framework.exceptions import PermissionDenied, ValidationError


def as_drf_error(error: Exception) -> Exception:
    """Turn a service's Django error into the matching DRF error (400 or 403)."""
    if isinstance(error, DjangoPermissionDenied):
        return PermissionDenied(str(error))
    if hasattr(error, "message_dict"):
        return ValidationError(error.message_dict)
    return ValidationError({"detail": error.messages})
