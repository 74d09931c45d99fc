"""/api/v1/approvals/: the approval queue for chat tools and other integrations.

The same rules as the pages: the decider is the authenticated account (never a field), must
hold the approvals permission and a role whose grant allows approving the tool, and may not
decide a request made on their own behalf.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import include, path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apps.accounts.api_errors import as_drf_error

from . import selectors, services
from .choices import RISK_TIERS, ApprovalStatus
from .models import ApprovalDecision, ApprovalRequest

# Fields a caller might send to decide as somebody else: refused outright, never ignored.
IMPERSONATION_FIELDS = ("approver", "by", "user", "on_behalf_of", "as_user")


class ApprovalRequestSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.CharField(source="agent.name", read_only=True, default=None)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approvals_given = serializers.IntegerField(read_only=True)
    sla_status = serializers.SerializerMethodField()
    url = serializers.HyperlinkedIdentityField(view_name="api:approval-detail", read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "url",
            "tenant",
            "agent",
            "tool_name",
            "risk_tier",
            "amount",
            "subject",
            "subject_verified",
            "channel",
            "requested_by",
            "rule",
            "status",
            "approvals_required",
            "approvals_given",
            "created_at",
            "due_at",
            "expires_at",
            "sla_status",
        ]
        read_only_fields = fields

    def get_sla_status(self, request: ApprovalRequest) -> str:
        return selectors.sla_status(request.status, request.due_at, request.expires_at)


class ApprovalDecisionSerializer(serializers.ModelSerializer):
    approver = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ApprovalDecision
        fields = ["approver", "approve", "comment", "approver_roles", "created_at"]
        read_only_fields = fields


class ApprovalRequestDetailSerializer(ApprovalRequestSerializer):
    decisions = ApprovalDecisionSerializer(many=True, read_only=True)
    approvals_given = serializers.SerializerMethodField()

    class Meta(ApprovalRequestSerializer.Meta):
        fields = [
            *ApprovalRequestSerializer.Meta.fields,
            "arguments",
            "rule_text",
            "context",
            "conversation_id",
            "turn_id",
            "decided_at",
            "executed_at",
            "outcome_note",
            "result",
            "decisions",
        ]
        read_only_fields = fields

    def get_approvals_given(self, request: ApprovalRequest) -> int:
        return sum(1 for decision in request.decisions.all() if decision.approve)


class DecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("status", description="Default pending; 'any' for every status."),
            OpenApiParameter("tenant", description="Tenant slug."),
            OpenApiParameter("agent", int),
            OpenApiParameter("tool", description="Tool name, e.g. refund.issue."),
            OpenApiParameter("risk_tier", enum=list(RISK_TIERS)),
            OpenApiParameter("overdue", bool, description="Only pending requests past their SLA."),
        ]
    )
)
class ApprovalRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Approval requests you may see; pending ones first by SLA due."""

    def get_serializer_class(self):
        if self.action == "retrieve":
            return ApprovalRequestDetailSerializer
        if self.action in ("approve", "reject"):
            return DecisionSerializer
        return ApprovalRequestSerializer

    def _filters(self) -> selectors.QueueFilters:
        params = self.request.query_params
        status_filter = params.get("status", ApprovalStatus.PENDING)
        if status_filter == "any":
            status_filter = ""
        elif status_filter not in ApprovalStatus.values:
            raise ValidationError({"status": f"Use one of: any, {', '.join(ApprovalStatus.values)}."})
        if params.get("risk_tier") and params["risk_tier"] not in RISK_TIERS:
            raise ValidationError({"risk_tier": f"Use one of: {', '.join(RISK_TIERS)}."})
        agent = params.get("agent")
        if agent and not agent.isdigit():
            raise ValidationError({"agent": "Give the agent's numeric id."})
        return selectors.QueueFilters(
            status=status_filter,
            tenant=params.get("tenant", ""),
            agent=int(agent) if agent else None,
            tool=params.get("tool", ""),
            risk_tier=params.get("risk_tier", ""),
            overdue=params.get("overdue", "").lower() in ("1", "true", "yes"),
        )

    def get_queryset(self):
        if self.action == "list":
            return selectors.queue(self.request.user, self._filters())
        return selectors.visible_to(self.request.user)

    def get_object(self):
        try:
            return selectors.request_for_page(self.request.user, int(self.kwargs["pk"]))
        except (ApprovalRequest.DoesNotExist, ValueError):
            raise NotFound("No such approval request.") from None

    def _decide(self, request, pk, *, approve: bool):
        sent = [name for name in IMPERSONATION_FIELDS if name in request.data]
        if sent:
            raise ValidationError(dict.fromkeys(sent, "The decider is always the authenticated account."))
        approval = self.get_object()
        payload = DecisionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.decide(approval.pk, by=request.user, approve=approve, comment=payload.validated_data["comment"])
        except DjangoValidationError as error:
            if "comment" in getattr(error, "message_dict", {}):
                raise as_drf_error(error) from error
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_409_CONFLICT)
        except DjangoPermissionDenied as error:
            raise as_drf_error(error) from error
        fresh = self.get_object()
        return Response(ApprovalRequestDetailSerializer(fresh, context={"request": request}).data)

    @extend_schema(request=DecisionSerializer, responses=ApprovalRequestDetailSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """Approve (counts towards the quorum; the action runs once the quorum is reached)."""
        return self._decide(request, pk, approve=True)

    @extend_schema(request=DecisionSerializer, responses=ApprovalRequestDetailSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        """Reject, saying why (required): the agent and the customer are told."""
        return self._decide(request, pk, approve=False)


router = SimpleRouter()
router.register("approvals", ApprovalRequestViewSet, basename="approval")

urlpatterns = [path("", include(router.urls))]
