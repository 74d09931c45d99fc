from django.db import models


class Environment(models.TextChoices):
    DEVELOPMENT = "dev", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "prod", "Production"


class AgentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    RETIRED = "retired", "Retired"


class RolloutMode(models.TextChoices):
    """How much the agent may do on its own, least autonomous first."""

    SHADOW = "shadow", "Shadow (observe only, never acts)"
    SUGGEST = "suggest", "Suggest (proposes, a human acts)"
    ASSIST = "assist", "Assist (reversible actions only)"
    APPROVAL = "approval", "Act with approval"
    AUTONOMOUS = "autonomous", "Scoped autonomy"


ROLLOUT_ORDER = [mode.value for mode in RolloutMode]


class Channel(models.TextChoices):
    WEB_CHAT = "web_chat", "Web chat"
    EMAIL = "email", "E-mail"
    VOICE = "voice", "Voice"
    SMS = "sms", "SMS"
    SLACK = "slack", "Slack"
    TEAMS = "teams", "Microsoft Teams"
    API = "api", "API"
    INTERNAL = "internal", "Internal console"
