from django.db import models


class RoleKind(models.TextChoices):
    """The jobs people do in the control plane. Each tenant's roles are of one kind."""

    SUPPORT_AGENT = "support_agent", "Support agent"
    SUPPORT_LEAD = "support_lead", "Support lead"
    KNOWLEDGE_OWNER = "knowledge_owner", "Knowledge owner"
    COMPLIANCE = "compliance", "Compliance"
    SECURITY = "security", "Security"
    AGENT_OWNER = "agent_owner", "Agent owner"
    ADMIN = "admin", "Administrator"


class MembershipSource(models.TextChoices):
    LOCAL = "local", "Assigned in the control plane"
    IDENTITY_PROVIDER = "idp", "From identity provider groups"
