"""/api/v1/conversations/ and /api/v1/turns/: talk to an agent and read what it did.

The actor is always the authenticated account: a channel integration authenticates as
itself and names the customer as the conversation's subject; no field lets a caller act
as another person. Posting a turn answers 202 with the turn's id at once; the turn runs on
a worker and its trace is read from /api/v1/turns/<id>/.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count
from django.urls import include, path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apps.accounts.api_errors import as_drf_error
from apps.agents.choices import Channel
from apps.agents.models import Agent
from apps.knowledge.choices import Audience

from . import services
from .models import Conversation, Step, Turn

# Fields a caller might send to act as somebody else: refused outright, never ignored.
IMPERSONATION_FIELDS = ("actor", "user", "on_behalf_of", "acting_user", "as_user")


def _refuse_impersonation(data) -> None:
    sent = [name for name in IMPERSONATION_FIELDS if name in data]
    if sent:
        raise ValidationError(
            dict.fromkeys(sent, "The actor is always the authenticated account; name the customer as the subject.")
        )


class ConversationSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.PrimaryKeyRelatedField(queryset=Agent.objects.all())
    agent_name = serializers.CharField(source="agent.name", read_only=True)
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)
    channel = serializers.ChoiceField(choices=Channel.choices)
    audience = serializers.ChoiceField(choices=Audience.choices, required=False)
    turn_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "tenant",
            "agent",
            "agent_name",
            "actor",
            "channel",
            "audience",
            "subject",
            "subject_verified",
            "region",
            "segment",
            "plan",
            "brand",
            "status",
            "turn_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "created_at", "updated_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            # Agents of other tenants read as "does not exist".
            self.fields["agent"].queryset = Agent.objects.for_user(request.user, "runtime.add_conversation")


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = [
            "number",
            "kind",
            "summary",
            "detail",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "cost",
            "created_at",
        ]


class TurnSerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="api:turn-detail", read_only=True)

    class Meta:
        model = Turn
        fields = [
            "id",
            "url",
            "conversation",
            "number",
            "actor",
            "input",
            "status",
            "decision",
            "decision_reason",
            "output",
            "model",
            "offline",
            "prompt_version",
            "input_tokens",
            "output_tokens",
            "cost",
            "model_ms",
            "latency_ms",
            "attempts",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TurnWithTraceSerializer(TurnSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta(TurnSerializer.Meta):
        fields = [*TurnSerializer.Meta.fields, "steps"]


class PostTurnSerializer(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=True, allow_blank=False)
    client_key = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="Your idempotency key (or the Idempotency-Key header): posting it again returns the same turn.",
    )


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("agent", int, description="An agent's id."),
            OpenApiParameter("status", str),
            OpenApiParameter("subject", str, description="A customer's id."),
        ]
    )
)
class ConversationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Conversations with agents, in the tenants where the caller may read them."""

    serializer_class = ConversationSerializer

    def _visible(self):
        return (
            Conversation.objects.for_user(self.request.user)
            .select_related("tenant", "agent", "actor")
            .annotate(turn_count=Count("turns"))
        )

    def get_queryset(self):
        queryset = self._visible()
        if self.action != "list":
            return queryset
        params = self.request.query_params
        agent = params.get("agent")
        if agent:
            if not agent.isdigit():
                raise ValidationError({"agent": "An agent is named by its id (a number)."})
            queryset = queryset.filter(agent_id=int(agent))
        for parameter in ("status", "subject"):
            if value := params.get(parameter):
                queryset = queryset.filter(**{parameter: value})
        return queryset

    def create(self, request, *args, **kwargs):
        _refuse_impersonation(request.data)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        agent, channel = data.pop("agent"), data.pop("channel")
        try:
            conversation = services.open_conversation(actor=request.user, agent=agent, channel=channel, **data)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        return Response(self.get_serializer(self._visible().get(pk=conversation.pk)).data, status=201)

    @extend_schema(request=PostTurnSerializer, responses={202: TurnSerializer, 200: TurnSerializer})
    @action(detail=True, methods=["get", "post"])
    def turns(self, request, pk=None):
        """GET: the conversation's turns. POST: send a message; 202 with the queued turn (200
        with the earlier turn when its idempotency key was seen); 409 when the agent may not
        take turns now or the previous turn is still running."""
        conversation = self.get_object()
        if request.method == "GET":
            turns = conversation.turns.select_related("actor").order_by("number")
            return Response(TurnSerializer(turns, many=True, context={"request": request}).data)
        _refuse_impersonation(request.data)
        payload = PostTurnSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key = payload.validated_data["client_key"] or request.headers.get("Idempotency-Key", "")
        seen = bool(key) and conversation.turns.filter(client_key=key.strip()).exists()
        try:
            turn = services.submit_turn(
                conversation=conversation, actor=request.user, text=payload.validated_data["text"], client_key=key
            )
        except services.TurnRefused as refusal:
            return Response({"detail": refusal.message}, status=status.HTTP_409_CONFLICT)
        except (DjangoValidationError, DjangoPermissionDenied) as error:
            raise as_drf_error(error) from error
        turn = Turn.objects.select_related("actor").get(pk=turn.pk)
        data = TurnSerializer(turn, context={"request": request}).data
        return Response(data, status=status.HTTP_200_OK if seen else status.HTTP_202_ACCEPTED)


class TurnViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One turn with its trace (every step, in order)."""

    serializer_class = TurnWithTraceSerializer

    def get_queryset(self):
        return Turn.objects.for_user(self.request.user, "runtime.view_turn").select_related("actor")

    def get_object(self):
        try:
            return self.get_queryset().prefetch_related("steps").get(pk=self.kwargs["pk"])
        except (Turn.DoesNotExist, DjangoValidationError):
            raise NotFound("No such turn.") from None


router = SimpleRouter()
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("turns", TurnViewSet, basename="turn")

urlpatterns = [path("", include(router.urls))]
