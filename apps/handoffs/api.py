"""/api/v1/handoffs/: read handoffs with their package, and work them (claim, resolve,
return to the agent).

The list takes the queue page's filters (``HandoffFilterForm``); without ``status`` it lists
the handoffs still waiting for a person. A handoff the caller may not read answers 404; one
they may read but not work answers 403 with why; one someone else changed meanwhile (claimed,
resolved) answers 409.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apps.accounts.api_errors import as_drf_error

from . import selectors, services
from .choices import SlaState
from .forms import HandoffFilterForm
from .models import Handoff


class HandoffSerializer(serializers.ModelSerializer):
    """A row of the queue."""

    url = serializers.HyperlinkedIdentityField(view_name="api:handoff-detail", read_only=True)
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent_name = serializers.CharField(source="agent.name", read_only=True, default=None)
    queue_name = serializers.CharField(source="queue.name", read_only=True, default=None)
    claimed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    sla_state = serializers.ChoiceField(choices=SlaState.choices, read_only=True)

    class Meta:
        model = Handoff
        fields = [
            "id",
            "url",
            "tenant",
            "agent",
            "agent_name",
            "status",
            "reason_code",
            "reason",
            "topic",
            "subject",
            "channel",
            "urgency",
            "priority",
            "queue",
            "queue_name",
            "due_at",
            "sla_state",
            "escalation_level",
            "claimed_by",
            "claimed_at",
            "created_at",
        ]
        read_only_fields = fields


class HandoffDetailSerializer(HandoffSerializer):
    """One handoff with its whole package and what people did with it."""

    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    resolved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    returned_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta(HandoffSerializer.Meta):
        fields = [
            *HandoffSerializer.Meta.fields,
            "conversation_id",
            "turn_id",
            "summary",
            "customer",
            "account_context",
            "transcript",
            "sources",
            "tool_calls",
            "sentiment",
            "requested_by",
            "resolved_by",
            "resolved_at",
            "resolution",
            "returned_by",
            "returned_at",
            "return_note",
            "escalated_at",
        ]
        read_only_fields = fields


class ResolveSerializer(serializers.Serializer):
    resolution = serializers.CharField(
        allow_blank=True, trim_whitespace=False, help_text="What was done for the customer (required)."
    )


class ReturnSerializer(serializers.Serializer):
    note = serializers.CharField(
        allow_blank=True, trim_whitespace=False, help_text="Why the agent can take the conversation back (required)."
    )


_CONFLICT = OpenApiResponse(description="Someone else claimed, resolved or returned it meanwhile.")
_REFUSED = OpenApiResponse(description="You may read this handoff but not work it (tenant role, queue roles, claimer).")


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("tenant", int, description="A tenant's id."),
            OpenApiParameter("queue", int, description="A queue's id; 0 for handoffs no queue took."),
            OpenApiParameter(
                "status", str, description="open, claimed, resolved, returned, or all (default: open or claimed)."
            ),
            OpenApiParameter("priority", str, description="low, normal, high, urgent."),
            OpenApiParameter("sla", str, description="overdue, due_soon, on_time."),
            OpenApiParameter("mine", OpenApiTypes.BOOL, description="Only handoffs you claimed."),
        ]
    )
)
class HandoffViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Handoffs of the tenants where the caller may read them, soonest due first."""

    def get_serializer_class(self):
        return HandoffSerializer if self.action == "list" else HandoffDetailSerializer

    def get_queryset(self):
        queryset = selectors.visible_handoffs(self.request.user)
        if self.action != "list":
            return queryset.select_related("requested_by", "resolved_by", "returned_by")
        allowed = selectors.tenants_allowed(self.request.user)
        form = HandoffFilterForm(
            self.request.query_params,
            tenant_choices=selectors.tenant_choices(allowed),
            queue_choices=selectors.queue_choices(allowed),
        )
        if not form.is_valid():
            problems = form.errors.get_json_data()
            raise ValidationError({field: [error["message"] for error in errors] for field, errors in problems.items()})
        filtered = selectors.filter_handoffs(queryset, form.filters(), user=self.request.user, now=timezone.now())
        return selectors.in_due_order(filtered)

    def _work(self, request, operation, **arguments):
        handoff = self.get_object()  # 404 unless the caller may read it
        try:
            operation(handoff_id=handoff.pk, by=request.user, **arguments)
        except services.HandoffStateError as conflict:
            return Response({"detail": " ".join(conflict.messages)}, status=status.HTTP_409_CONFLICT)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        return Response(HandoffDetailSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(request=None, responses={200: HandoffDetailSerializer, 403: _REFUSED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def claim(self, request, pk=None):
        """Take the handoff: it is yours to answer (claiming one you hold changes nothing)."""
        return self._work(request, services.claim)

    @extend_schema(request=ResolveSerializer, responses={200: HandoffDetailSerializer, 403: _REFUSED, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Close a handoff you claimed, saying what was done for the customer."""
        payload = ResolveSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return self._work(request, services.resolve, resolution=payload.validated_data["resolution"])

    @extend_schema(request=ReturnSerializer, responses={200: HandoffDetailSerializer, 403: _REFUSED, 409: _CONFLICT})
    @action(detail=True, methods=["post"], url_path="return", url_name="return")
    def return_to_agent(self, request, pk=None):
        """Give the conversation back to the agent (an open handoff, or one you claimed)."""
        payload = ReturnSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        return self._work(request, services.return_to_agent, note=payload.validated_data["note"])


router = SimpleRouter()
router.register("handoffs", HandoffViewSet, basename="handoff")

urlpatterns = [path("", include(router.urls))]
