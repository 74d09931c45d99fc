from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from apps.accounts.models import Membership, Tenant
from apps.accounts.permissions import TenantScopedQuerySet

from .choices import AgentStatus, Channel, Environment, RolloutMode


def _is_list_of_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value)


# Topics a support agent should hand to a person rather than answer, with the words that
# name them. Agent owners edit the list per agent (admin: Turn rules).
DEFAULT_ESCALATION_TOPICS = {
    "legal": ["lawyer", "attorney", "lawsuit", "sue", "legal action", "court", "solicitor"],
    "medical": ["doctor", "medical", "medication", "symptom", "diagnosis", "allergic reaction", "injury"],
    "billing dispute": ["chargeback", "dispute the charge", "charged twice", "double charged", "unauthorized charge"],
}


def default_escalation_topics() -> dict:
    return {topic: list(words) for topic, words in DEFAULT_ESCALATION_TOPICS.items()}


class ModelProvider(models.Model):
    """An OpenAI-compatible Chat Completions endpoint a tenant's agents may use.

    The API key is named by an environment variable and read only where the model is
    called, so it never appears in the database, the admin or the API.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="model_providers")
    name = models.CharField(max_length=100)
    base_url = models.URLField(help_text="e.g. https://api.openai.com/v1 or http://vllm.internal:8000/v1")
    api_key_env_var = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key itself).",
    )
    model_names = models.JSONField(default=list, help_text='Models agents may pick, e.g. ["gpt-4o-mini", "gpt-4o"].')
    input_price_per_million = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    output_price_per_million = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    timeout_seconds = models.PositiveIntegerField(default=30)
    max_retries = models.PositiveSmallIntegerField(default=2)
    is_active = models.BooleanField(default=True)

    history = HistoricalRecords()
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="model_provider_name_unique_in_tenant"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not _is_list_of_names(self.model_names) or not self.model_names:
            raise ValidationError({"model_names": 'Enter at least one model name as a list, e.g. ["gpt-4o-mini"].'})
        if self.api_key_env_var and not self.api_key_env_var.replace("_", "").isalnum():
            raise ValidationError(
                {"api_key_env_var": "Enter the name of an environment variable (letters, digits, underscores)."}
            )


class AgentQuerySet(TenantScopedQuerySet):
    def with_inventory_relations(self):
        return self.select_related("tenant", "owner", "model_provider", "current_prompt", "status_changed_by")


class Agent(models.Model):
    """One AI agent in the inventory: who owns it, what it is for, where it runs, how much
    it may do on its own, and whether it may run at all."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="agents")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, help_text="Unique within the tenant; used in the API and in traces.")
    purpose = models.TextField(help_text="What this agent is for, in a sentence a customer would understand.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_agents",
        help_text="The person accountable for this agent. Required.",
    )
    business_owner = models.CharField(
        max_length=200, blank=True, help_text="The business stakeholder (name or team) the agent serves."
    )
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.DEVELOPMENT)
    connected_systems = models.JSONField(
        default=list, blank=True, help_text='Business systems this agent reaches, e.g. ["Zendesk", "Shopify"].'
    )
    channels = models.JSONField(default=list, blank=True, help_text="Channels the agent serves.")
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    rollout_mode = models.CharField(max_length=16, choices=RolloutMode.choices, default=RolloutMode.SHADOW)
    model_provider = models.ForeignKey(
        ModelProvider, on_delete=models.PROTECT, null=True, blank=True, related_name="agents"
    )
    model_name = models.CharField(max_length=100, blank=True)
    current_prompt = models.ForeignKey(
        "PromptVersion",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The system prompt version this agent runs with.",
    )
    routine_model_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="A cheaper model of the same provider for turns that cannot reach a high or critical tool. "
        "Empty: the agent's model for every turn.",
    )
    # Turn rules: limits and the business rules that hand a conversation to a person.
    max_steps_per_turn = models.PositiveSmallIntegerField(
        default=6, help_text="Model calls one turn may make (each round of tool calls takes one)."
    )
    max_cost_per_turn = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.2500"), help_text="In the provider's currency (USD)."
    )
    confidence_threshold = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0.30"),
        help_text="A grounded answer whose sources cover less of the question than this (0 to 1) is escalated.",
    )
    escalation_topics = models.JSONField(
        default=default_escalation_topics,
        blank=True,
        help_text='Topics handed to a person, each with the words that name it: {"legal": ["lawyer", "sue"]}.',
    )
    escalate_on_request = models.BooleanField(default=True, help_text="Hand over when the customer asks for a person.")
    escalate_on_negative_sentiment = models.BooleanField(
        default=True, help_text="Hand over when the customer is clearly upset."
    )
    escalate_after_fallbacks = models.PositiveSmallIntegerField(
        default=2, help_text="Hand over after this many fallback answers in a row in a conversation (0: never)."
    )
    status_reason = models.TextField(blank=True, help_text="Why the status last changed.")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        permissions = [("suspend_agent", "Can suspend and resume an agent")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slug"], name="agent_slug_unique_in_tenant"),
            models.CheckConstraint(condition=models.Q(status__in=AgentStatus.values), name="agent_status_known"),
            models.CheckConstraint(
                condition=models.Q(rollout_mode__in=RolloutMode.values), name="agent_rollout_mode_known"
            ),
            models.CheckConstraint(
                condition=models.Q(environment__in=Environment.values), name="agent_environment_known"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        # Checked here rather than left to the (tenant, slug) constraint, whose error names
        # no field; an error on "slug" also makes full_clean skip that constraint.
        if (
            self.tenant_id
            and self.slug
            and Agent.objects.filter(tenant_id=self.tenant_id, slug=self.slug).exclude(pk=self.pk).exists()
        ):
            errors["slug"] = f"{self.tenant} already has an agent with the slug “{self.slug}”: pick another."
        if self.owner_id is None:
            errors["owner"] = "Every agent needs an owner: the person accountable for what it does."
        elif (
            self.tenant_id
            and not Membership.objects.filter(user_id=self.owner_id, role__tenant_id=self.tenant_id).exists()
        ):
            errors["owner"] = "The owner must hold a role in this agent's tenant."
        if not _is_list_of_names(self.connected_systems):
            errors["connected_systems"] = 'Enter a list of system names, e.g. ["Zendesk", "Shopify"].'
        if not isinstance(self.channels, list) or not all(channel in Channel.values for channel in self.channels):
            errors["channels"] = f"Enter a list of channels from: {', '.join(Channel.values)}."
        elif len(set(self.channels)) != len(self.channels):
            errors["channels"] = "Each channel may appear once."
        if self.model_provider_id:
            provider = self.model_provider
            if self.tenant_id and provider.tenant_id != self.tenant_id:
                errors["model_provider"] = "Pick a model provider of this agent's tenant."
            elif self.model_name and self.model_name not in provider.model_names:
                errors["model_name"] = f"{provider.name} offers: {', '.join(provider.model_names)}."
            elif not self.model_name:
                errors["model_name"] = "Pick which of the provider's models this agent uses."
            if (
                "model_name" not in errors
                and self.routine_model_name
                and self.routine_model_name not in provider.model_names
            ):
                errors["routine_model_name"] = f"{provider.name} offers: {', '.join(provider.model_names)}."
        elif self.model_name:
            errors["model_provider"] = "Pick the provider that serves this model."
        elif self.routine_model_name:
            errors["routine_model_name"] = "A routine model needs a model provider."
        if not 1 <= self.max_steps_per_turn <= 50:
            errors["max_steps_per_turn"] = "Allow between 1 and 50 model calls per turn."
        if self.max_cost_per_turn is not None and self.max_cost_per_turn <= 0:
            errors["max_cost_per_turn"] = "The cost limit must be above zero."
        if self.confidence_threshold is not None and not 0 <= self.confidence_threshold <= 1:
            errors["confidence_threshold"] = "Enter a number from 0 to 1."
        topics_problem = _escalation_topics_problem(self.escalation_topics)
        if topics_problem:
            errors["escalation_topics"] = topics_problem
        if self.current_prompt_id and self.current_prompt.agent_id != self.pk:
            errors["current_prompt"] = "The current prompt must be one of this agent's own versions."
        if errors:
            raise ValidationError(errors)

    @property
    def is_active(self) -> bool:
        return self.status == AgentStatus.ACTIVE


def _escalation_topics_problem(topics) -> str:
    example = 'Enter topics with their words, e.g. {"legal": ["lawyer", "sue"]}.'
    if not isinstance(topics, dict):
        return example
    for topic, words in topics.items():
        if not topic.strip() or not _is_list_of_names(words) or not words:
            return f"Topic “{topic}” needs a list of words that name it. {example}"
    return ""


class PromptVersionQuerySet(TenantScopedQuerySet):
    tenant_field = "agent__tenant"


class PromptVersion(models.Model):
    """An immutable system prompt. Editing a prompt publishes a new version; the agent
    points at its current one, so every trace can name exactly what the model was told."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="prompt_versions")
    number = models.PositiveIntegerField()
    text = models.TextField()
    change_note = models.CharField(max_length=300, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = PromptVersionQuerySet.as_manager()

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="prompt_version_number_unique_per_agent"),
        ]

    def __str__(self) -> str:
        return f"{self.agent} v{self.number}"

    # Approval is the one thing that may be added to a published version, once.
    _APPROVAL_FIELDS = ("approved_by", "approved_at")

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            stored = (
                type(self)
                .objects.filter(pk=self.pk)
                .values("agent_id", "number", "text", "change_note", "author_id", "approved_by_id")
                .first()
            )
            if stored is not None:
                content_changed = any(
                    stored[field] != getattr(self, field)
                    for field in ("agent_id", "number", "text", "change_note", "author_id")
                )
                approval_rewritten = (
                    stored["approved_by_id"] is not None and stored["approved_by_id"] != self.approved_by_id
                )
                if content_changed or approval_rewritten:
                    raise ValidationError("Prompt versions are immutable: publish a new version instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Prompt versions are kept for the record and cannot be deleted.")


class KillSwitch(models.Model):
    """Stops agents from starting new turns: the global switch stops every agent of every
    tenant, a tenant switch every agent of one tenant. Checked at the start of each turn."""

    GLOBAL_SCOPE = "global"

    scope = models.CharField(max_length=40, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    engaged = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        verbose_name = "kill switch"
        verbose_name_plural = "kill switches"
        ordering = ["scope"]

    def __str__(self) -> str:
        where = "Global" if self.tenant_id is None else str(self.tenant)
        return f"{where} kill switch ({'ENGAGED' if self.engaged else 'off'})"

    def save(self, *args, **kwargs) -> None:
        self.scope = self.scope_for(self.tenant_id)
        super().save(*args, **kwargs)

    @classmethod
    def scope_for(cls, tenant_id: int | None) -> str:
        return cls.GLOBAL_SCOPE if tenant_id is None else f"tenant:{tenant_id}"
