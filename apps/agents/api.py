"""/api/v1/agents/ and /api/v1/kill-switches/: the inventory for integrators and tooling.

Everyone with a role in a tenant reads its agents; agent owners (and admins) create and
edit them; suspend and resume are commands that call the same services as the admin.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import include, path
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from apps.accounts.api_errors import as_drf_error
from apps.accounts.models import Tenant, User
from apps.accounts.permissions import has_tenant_permission, tenants_visible_to

from . import services
from .choices import Channel, Environment, RolloutMode
from .models import Agent, KillSwitch, ModelProvider
from .selectors import agents_visible_to, kill_switches_visible_to


class AgentSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    owner = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.filter(is_active=True))
    model_provider = serializers.PrimaryKeyRelatedField(
        queryset=ModelProvider.objects.all(), required=False, allow_null=True
    )
    environment = serializers.ChoiceField(choices=Environment.choices, required=False)
    rollout_mode = serializers.ChoiceField(choices=RolloutMode.choices, required=False)
    channels = serializers.ListField(child=serializers.ChoiceField(choices=Channel.choices), required=False)
    connected_systems = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    current_prompt_version = serializers.IntegerField(source="current_prompt.number", read_only=True, default=None)
    status_changed_by = serializers.StringRelatedField(read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id",
            "tenant",
            *services.EDITABLE_AGENT_FIELDS,
            "status",
            "current_prompt_version",
            "status_reason",
            "status_changed_at",
            "status_changed_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "status_reason", "status_changed_at", "created_at", "updated_at"]
        # Uniqueness of (tenant, slug) is checked by the model's own validation, which
        # names the field; DRF's generic validator would not.
        validators = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Resolve tenant and owner names only among the tenants the caller holds a role in,
        # so another organisation's tenant or people read as "does not exist".
        request = self.context.get("request")
        if request is not None:
            tenants = tenants_visible_to(request.user)
            self.fields["tenant"].queryset = tenants
            self.fields["owner"].queryset = User.objects.filter(
                is_active=True, memberships__role__tenant__in=tenants
            ).distinct()
            self.fields["model_provider"].queryset = ModelProvider.objects.filter(tenant__in=tenants)

    def validate(self, attrs):
        if self.instance is not None and "tenant" in attrs and attrs["tenant"] != self.instance.tenant:
            raise ValidationError({"tenant": "An agent cannot move between tenants."})
        return attrs


class AgentCreateSerializer(AgentSerializer):
    prompt = serializers.CharField(
        write_only=True, required=False, allow_blank=True, style={"base_template": "textarea.html"}
    )

    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "prompt"]


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why: kept with the agent's history.")


class PublishPromptSerializer(serializers.Serializer):
    text = serializers.CharField()
    change_note = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class AgentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The agent inventory. Agents are retired, never deleted."""

    lookup_field = "pk"

    def get_queryset(self):
        queryset = agents_visible_to(self.request.user)
        for parameter in ("status", "rollout_mode", "environment"):
            value = self.request.query_params.get(parameter)
            if value:
                queryset = queryset.filter(**{parameter: value})
        if tenant := self.request.query_params.get("tenant"):
            queryset = queryset.filter(tenant__slug=tenant)
        if owner := self.request.query_params.get("owner"):
            queryset = queryset.filter(owner__username=owner)
        return queryset

    def get_serializer_class(self):
        return AgentCreateSerializer if self.action == "create" else AgentSerializer

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        tenant = data.pop("tenant")
        prompt = data.pop("prompt", "")
        if not has_tenant_permission(self.request.user, tenant.pk, "agents.add_agent"):
            raise PermissionDenied(f"You may not create agents in {tenant}.")
        try:
            serializer.instance = services.create_agent(by=self.request.user, tenant=tenant, prompt_text=prompt, **data)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        data.pop("tenant", None)
        try:
            serializer.instance = services.update_agent(agent=serializer.instance, by=self.request.user, **data)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error

    def _status_command(self, request, operation):
        agent = self.get_object()
        payload = ReasonSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            agent = operation(agent=agent, by=request.user, reason=payload.validated_data["reason"])
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        agent = self.get_queryset().get(pk=agent.pk)
        return Response(AgentSerializer(agent, context=self.get_serializer_context()).data)

    @extend_schema(request=ReasonSerializer, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        """Stop this agent from starting new turns. Other agents are untouched."""
        return self._status_command(request, services.suspend_agent)

    @extend_schema(request=ReasonSerializer, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._status_command(request, services.resume_agent)

    @extend_schema(request=ReasonSerializer, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def retire(self, request, pk=None):
        """Take the agent out of service for good; it stays in the inventory."""
        return self._status_command(request, services.retire_agent)

    @extend_schema(request=PublishPromptSerializer, responses=AgentSerializer)
    @action(detail=True, methods=["post"], url_path="prompt")
    def publish_prompt(self, request, pk=None):
        """Publish a new immutable prompt version and make it current."""
        agent = self.get_object()
        payload = PublishPromptSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.publish_prompt(agent=agent, author=request.user, **payload.validated_data)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        agent = self.get_queryset().get(pk=agent.pk)
        return Response(AgentSerializer(agent, context=self.get_serializer_context()).data)


class KillSwitchSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    changed_by = serializers.StringRelatedField(read_only=True)

    class Meta:
        model = KillSwitch
        fields = ["scope", "tenant", "engaged", "reason", "changed_by", "changed_at"]


class KillSwitchCommandSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)
    tenant = serializers.SlugField(
        required=False, help_text="A tenant's slug for that tenant's switch; omit for the global switch."
    )


class KillSwitchViewSet(viewsets.GenericViewSet):
    """The global kill switch (platform administrators) and per-tenant switches (security)."""

    serializer_class = KillSwitchSerializer

    @extend_schema(responses=KillSwitchSerializer(many=True))
    def list(self, request):
        return Response(KillSwitchSerializer(kill_switches_visible_to(request.user), many=True).data)

    def _set(self, request, engaged: bool):
        payload = KillSwitchCommandSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tenant = None
        if slug := payload.validated_data.get("tenant"):
            # Unknown and not-yours answer alike, so the endpoint does not reveal tenants.
            tenant = tenants_visible_to(request.user).filter(slug=slug).first()
            if tenant is None and request.user.is_superuser:
                raise NotFound(f"No tenant with slug {slug!r}.")
            if tenant is None:
                raise PermissionDenied(f"You may not operate the kill switch of tenant {slug!r}.")
        try:
            switch = services.set_kill_switch(
                engaged=engaged, by=request.user, reason=payload.validated_data["reason"], tenant=tenant
            )
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        return Response(KillSwitchSerializer(switch).data, status=status.HTTP_200_OK)

    @extend_schema(request=KillSwitchCommandSerializer, responses=KillSwitchSerializer)
    @action(detail=False, methods=["post"])
    def engage(self, request):
        """Stop every agent (or every agent of one tenant) from starting a new turn."""
        return self._set(request, True)

    @extend_schema(request=KillSwitchCommandSerializer, responses=KillSwitchSerializer)
    @action(detail=False, methods=["post"])
    def release(self, request):
        return self._set(request, False)


router = DefaultRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("kill-switches", KillSwitchViewSet, basename="kill-switch")

urlpatterns = [path("", include(router.urls))]
