from django.db import models


class RiskTier(models.TextChoices):
    """How much harm a wrong call can do, least first. High and critical always wait for a human."""

    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


TIERS_NEEDING_APPROVAL = (RiskTier.HIGH, RiskTier.CRITICAL)


class Effect(models.TextChoices):
    """What a grant lets a role do with a tool, least restrictive first."""

    ALLOW = "allow", "Allow"
    REQUIRE_APPROVAL = "require_approval", "Allow with a human's approval"
    DENY = "deny", "Deny"


EFFECT_ORDER = [effect.value for effect in Effect]  # a later effect is stricter


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


class AuthKind(models.TextChoices):
    NONE = "none", "No authentication"
    BEARER = "bearer", "Bearer token (Authorization header)"
    API_KEY_HEADER = "api_key_header", "API key in a header"
    BASIC = "basic", "HTTP basic (user:password)"


class ConnectorKind(models.TextChoices):
    BUILTIN = "builtin", "Built-in (runs inside the control plane)"
    HTTP = "http", "HTTP call to a connected system"


class HttpMethod(models.TextChoices):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class Outcome(models.TextChoices):
    """What became of one gateway call."""

    DENIED = "denied", "Denied"
    PROPOSED = "proposed", "Proposed (shadow: recorded, never executed)"
    SUGGESTED = "suggested", "Suggested to a human"
    NEEDS_APPROVAL = "needs_approval", "Waiting for approval"
    EXECUTING = "executing", "Executing"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed"
