"""/api/v1/tools/, /api/v1/connections/, /api/v1/tool-grants/ and /api/v1/tool-calls/: the
tool registry and its record, read-only, for integrators and tooling.

Each lists the rows of the tenants where the caller may view that kind of row. No response
carries a secret: a connection says where its secret lives, never what it is (not even the
value of the environment variable it names). Revoking a grant is a command calling the
same service as the admin.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import include, path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apps.accounts.api_errors import as_drf_error

from . import selectors, services
from .choices import Effect, Outcome, RiskTier
from .models import Connection, Grant, Tool, ToolCall


def _filtered(queryset, params, **lookups: str):
    """``queryset`` narrowed by the query parameters present: ``lookups`` maps each
    parameter to the field lookup it filters on."""
    for param, lookup in lookups.items():
        if value := params.get(param):
            queryset = queryset.filter(**{lookup: value})
    return queryset


def _truthy(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


TENANT_PARAMETER = OpenApiParameter("tenant", str, description="A tenant's slug.")


class ToolSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    connection = serializers.SlugRelatedField(slug_field="name", read_only=True)
    connection_status = serializers.CharField(source="connection.status", read_only=True, default=None)

    class Meta:
        model = Tool
        fields = [
            "id",
            "tenant",
            "name",
            "description",
            "argument_schema",
            "risk_tier",
            "writes",
            "reversible",
            "external_facing",
            "connector",
            "builtin",
            "connection",
            "connection_status",
            "http_method",
            "path_template",
            "timeout_seconds",
            "amount_field",
            "approval_sla_minutes",
            "second_approver_above",
            "per_user_per_minute",
            "per_minute",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ConnectionSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status_changed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    secret_location = serializers.SerializerMethodField()
    # A plain string in the schema: an enum named "status" would collide with the agents'
    # (drf-spectacular warns, and check --deploy fails on warnings) until ENUM_NAME_OVERRIDES
    # names both.
    status = serializers.CharField(read_only=True, help_text='"active" or "revoked" (every tool on it is blocked).')

    class Meta:
        model = Connection
        # Deliberately no secret_env_var value lookup and no ciphertext: see secret_location.
        fields = [
            "id",
            "tenant",
            "name",
            "system",
            "description",
            "owner",
            "auth_kind",
            "auth_header",
            "base_url",
            "secret_location",
            "status",
            "status_reason",
            "status_changed_at",
            "status_changed_by",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "string",
            "example": "environment variable ORDERS_TOKEN",
            "description": '"environment variable NAME", "encrypted value" or "none". Never the secret.',
        }
    )
    def get_secret_location(self, connection: Connection) -> str:
        if connection.secret_env_var:
            return f"environment variable {connection.secret_env_var}"
        if connection.secret_ciphertext:
            return "encrypted value"
        return "none"


class GrantSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    role = serializers.CharField(source="role.name", read_only=True)
    role_kind = serializers.CharField(source="role.kind", read_only=True)
    tool = serializers.CharField(source="tool.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    revoked = serializers.SerializerMethodField()
    revoked_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Grant
        fields = [
            "id",
            "tenant",
            "role",
            "role_kind",
            "tool",
            "effect",
            "max_amount",
            "requires_verified_subject",
            "allowed_channels",
            "daily_limit_per_user",
            "may_approve",
            "note",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked",
            "revoked_at",
            "revoked_by",
            "revoke_reason",
        ]
        read_only_fields = fields

    def get_revoked(self, grant: Grant) -> bool:
        return not grant.is_active


class ToolCallSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    tool = serializers.CharField(source="tool_name", read_only=True)

    class Meta:
        model = ToolCall
        # Arguments and result as recorded (redacted); pending_arguments never leaves the gateway.
        fields = [
            "id",
            "tenant",
            "created_at",
            "finished_at",
            "agent",
            "tool",
            "user",
            "conversation_id",
            "turn_id",
            "channel",
            "subject_verified",
            "rollout_mode",
            "arguments",
            "effect",
            "outcome",
            "reason_code",
            "reason",
            "grant_ids",
            "approval_request_id",
            "result",
            "error",
            "latency_ms",
        ]
        read_only_fields = fields


class GrantRevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why: kept with the grant and in the audit trail.")


@extend_schema_view(
    list=extend_schema(
        parameters=[
            TENANT_PARAMETER,
            OpenApiParameter("risk_tier", str, enum=RiskTier.values),
            OpenApiParameter("active", bool, description="Only active (true) or inactive (false) tools."),
        ]
    )
)
class ToolViewSet(viewsets.ReadOnlyModelViewSet):
    """Tool definitions: argument schema, risk tier, side effects, connector and connection."""

    serializer_class = ToolSerializer

    def get_queryset(self):
        params = self.request.query_params
        queryset = _filtered(
            selectors.tools_visible_to(self.request.user), params, tenant="tenant__slug", risk_tier="risk_tier"
        )
        if (active := params.get("active")) is not None:
            queryset = queryset.filter(is_active=_truthy(active))
        return queryset


@extend_schema_view(
    list=extend_schema(parameters=[TENANT_PARAMETER, OpenApiParameter("status", str, enum=["active", "revoked"])])
)
class ConnectionViewSet(viewsets.ReadOnlyModelViewSet):
    """The systems agents reach and who owns each credential. Never the credential."""

    serializer_class = ConnectionSerializer

    def get_queryset(self):
        return _filtered(
            selectors.connections_visible_to(self.request.user),
            self.request.query_params,
            tenant="tenant__slug",
            status="status",
        )


@extend_schema_view(
    list=extend_schema(
        parameters=[
            TENANT_PARAMETER,
            OpenApiParameter("role", str, description="A role's name."),
            OpenApiParameter("tool", str, description="A tool's name."),
            OpenApiParameter("effect", str, enum=Effect.values),
            OpenApiParameter("revoked", bool, description="Only revoked (true) or active (false) grants."),
        ]
    )
)
class GrantViewSet(viewsets.ReadOnlyModelViewSet):
    """Which roles may have agents use which tools, on what conditions, and when each grant
    last authorised a call (to within minutes)."""

    serializer_class = GrantSerializer

    def get_queryset(self):
        params = self.request.query_params
        queryset = _filtered(
            selectors.grants_visible_to(self.request.user),
            params,
            tenant="tenant__slug",
            role="role__name",
            tool="tool__name",
            effect="effect",
        )
        if (revoked := params.get("revoked")) is not None:
            queryset = queryset.filter(revoked_at__isnull=not _truthy(revoked))
        return queryset

    @extend_schema(request=GrantRevokeSerializer, responses=GrantSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Take the tool away from the role from the next call on. The grant stays, revoked,
        with who, when and why."""
        grant = self.get_object()
        payload = GrantRevokeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            grant = services.revoke_grant(grant=grant, by=request.user, reason=payload.validated_data["reason"])
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        return Response(GrantSerializer(self.get_queryset().get(pk=grant.pk)).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            TENANT_PARAMETER,
            OpenApiParameter("agent", str, description="An agent's slug."),
            OpenApiParameter("tool", str, description="A tool's name."),
            OpenApiParameter("outcome", str, enum=Outcome.values),
            OpenApiParameter("reason_code", str, description="e.g. not_on_allowlist"),
        ]
    ),
)
class ToolCallViewSet(viewsets.ReadOnlyModelViewSet):
    """Every call through the gateway, newest first: who, which agent, the redacted arguments
    and result, the decision and why."""

    serializer_class = ToolCallSerializer

    def get_queryset(self):
        return _filtered(
            selectors.tool_calls_visible_to(self.request.user),
            self.request.query_params,
            tenant="tenant__slug",
            agent="agent__slug",
            tool="tool_name",
            outcome="outcome",
            reason_code="reason_code",
        )


router = SimpleRouter()  # the API root is apps.agents.api's
router.register("tools", ToolViewSet, basename="tool")
router.register("connections", ConnectionViewSet, basename="connection")
router.register("tool-grants", GrantViewSet, basename="tool-grant")
router.register("tool-calls", ToolCallViewSet, basename="tool-call")

urlpatterns = [path("", include(router.urls))]
