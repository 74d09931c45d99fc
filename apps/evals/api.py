"""/api/v1/ for evaluation: suites and cases, runs and their comparison, incident -> case,
people's reviews of real turns, and the rollout gates.

The same services and rules as the pages: the actor is always the authenticated account;
another tenant's rows read as not found.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Prefetch, Q
from django.urls import include, path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apps.accounts.api_errors import as_drf_error
from apps.agents.models import Agent
from apps.runtime.choices import Decision
from apps.runtime.models import Turn

from . import services
from .choices import DEFAULT_GATES, Category, GateMetric, ReviewKind, RunStatus, RunTrigger
from .models import EvalCase, EvalResult, EvalRun, EvalSuite, TurnReview


def _call(service, *args, **kwargs):
    """Run a service, answering its Django errors as the API's 400/403."""
    try:
        return service(*args, **kwargs)
    except (DjangoValidationError, DjangoPermissionDenied) as error:
        raise as_drf_error(error) from error


def _visible(model, user, action: str = "view"):
    return model.objects.for_user(user, action)


def _int_param(request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit():
        raise ValidationError({name: "Give a numeric id."})
    return int(value)


# --- Suites and cases ----------------------------------------------------------------------


class EvalCaseSerializer(serializers.ModelSerializer):
    suite = serializers.PrimaryKeyRelatedField(queryset=EvalSuite.objects.all())
    category = serializers.ChoiceField(choices=Category.choices)
    expected_decision = serializers.ChoiceField(choices=Decision.choices, allow_blank=True, required=False)
    source_turn = serializers.UUIDField(source="source_turn_id", read_only=True)

    class Meta:
        model = EvalCase
        fields = ["id", "suite", *services.CASE_FIELDS, "source_turn", "created_at"]
        read_only_fields = ["id", "source_turn", "created_at"]
        validators = []  # the service checks the (suite, name) uniqueness with a clear message

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["suite"].queryset = _visible(EvalSuite, request.user)


class EvalSuiteSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    run_as = serializers.SlugRelatedField(slug_field="username", read_only=True)
    case_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = EvalSuite
        fields = ["id", "tenant", "agent", "name", "description", "run_as", "run_weekly", "is_active", "case_count"]
        read_only_fields = fields


class EvalSuiteDetailSerializer(EvalSuiteSerializer):
    cases = EvalCaseSerializer(many=True, read_only=True)

    class Meta(EvalSuiteSerializer.Meta):
        fields = [*EvalSuiteSerializer.Meta.fields, "cases"]
        read_only_fields = fields


class RunRequestSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, help_text="The agent to evaluate; default the suite's own.")


class EvalRunSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    suite = serializers.CharField(source="suite.name", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    started_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    trigger = serializers.ChoiceField(choices=RunTrigger.choices, read_only=True)

    class Meta:
        model = EvalRun
        fields = [
            "id",
            "tenant",
            "suite",
            "suite_id",
            "agent",
            "agent_id",
            "status",
            "trigger",
            "started_by",
            "prompt_version",
            "model",
            "case_count",
            "passed_count",
            "failed_count",
            "error_count",
            "pass_rate",
            "category_rates",
            "input_tokens",
            "output_tokens",
            "cost",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class EvalResultSerializer(serializers.ModelSerializer):
    turn = serializers.UUIDField(source="turn_id", read_only=True)

    class Meta:
        model = EvalResult
        fields = [
            "case_id",
            "case_name",
            "category",
            "status",
            "decision",
            "decision_reason",
            "output",
            "cited",
            "tool_calls",
            "failures",
            "cost",
            "latency_ms",
            "turn",
        ]
        read_only_fields = fields


class EvalRunDetailSerializer(EvalRunSerializer):
    results = EvalResultSerializer(many=True, read_only=True)

    class Meta(EvalRunSerializer.Meta):
        fields = [*EvalRunSerializer.Meta.fields, "results"]
        read_only_fields = fields


class CaseChangeSerializer(serializers.Serializer):
    case_id = serializers.IntegerField()
    name = serializers.CharField()
    category = serializers.CharField()
    before = serializers.CharField(allow_null=True)
    after = serializers.CharField(allow_null=True)
    change = serializers.CharField()
    failures = serializers.ListField(child=serializers.CharField())


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("agent", int, description="Suites that evaluate this agent.")])
)
class EvalSuiteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Evaluation suites you may see. Edit suites and cases in the admin or through eval-cases."""

    def get_serializer_class(self):
        if self.action == "retrieve":
            return EvalSuiteDetailSerializer
        if self.action == "run":
            return RunRequestSerializer
        return EvalSuiteSerializer

    def get_queryset(self):
        suites = (
            _visible(EvalSuite, self.request.user)
            .select_related("tenant", "agent", "run_as")
            .annotate(case_count=Count("cases", filter=Q(cases__is_active=True)))
            .order_by("tenant__name", "name")
        )
        agent = _int_param(self.request, "agent") if self.action == "list" else None
        if agent is not None:
            found = Agent.objects.filter(pk=agent).first()
            suites = suites.for_agent(found) if found else suites.none()
        if self.action == "retrieve":
            suites = suites.prefetch_related(Prefetch("cases", queryset=EvalCase.objects.order_by("category", "name")))
        return suites

    @extend_schema(request=RunRequestSerializer, responses={202: EvalRunSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        """Queue a run of the suite's active cases (for the suite's agent, or ``agent`` for a
        shared suite); poll the run until it completes."""
        suite = self.get_object()
        payload = RunRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        agent_id = payload.validated_data.get("agent") or suite.agent_id
        if agent_id is None:
            raise ValidationError({"agent": "A shared suite needs the agent to evaluate."})
        agent = Agent.objects.filter(pk=agent_id, tenant_id=suite.tenant_id).first()
        if agent is None:
            raise ValidationError({"agent": "No such agent in the suite's tenant."})
        run = _call(services.start_run, suite=suite, agent=agent, by=request.user, trigger=RunTrigger.API)
        run = EvalRun.objects.select_related("tenant", "suite", "agent", "started_by").get(pk=run.pk)
        return Response(EvalRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class CaseFromTurnSerializer(serializers.Serializer):
    turn = serializers.UUIDField()
    suite = serializers.IntegerField()
    overrides = serializers.DictField(
        required=False, default=dict, help_text="Fields to set instead of the draft's (e.g. expected_decision)."
    )


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("suite", int), OpenApiParameter("category", enum=Category.values)])
)
class EvalCaseViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Evaluation cases. Creating one from an incident: POST eval-cases/from-turn/."""

    serializer_class = EvalCaseSerializer

    def get_queryset(self):
        cases = _visible(EvalCase, self.request.user).order_by("suite", "category", "name")
        suite = _int_param(self.request, "suite")
        if suite is not None:
            cases = cases.filter(suite_id=suite)
        category = self.request.query_params.get("category")
        if category:
            if category not in Category.values:
                raise ValidationError({"category": f"Use one of: {', '.join(Category.values)}."})
            cases = cases.filter(category=category)
        return cases

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        suite = data.pop("suite")
        serializer.instance = _call(services.create_case, by=self.request.user, suite=suite, **data)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        if "suite" in data and data.pop("suite") != serializer.instance.suite:
            raise ValidationError({"suite": "A case stays in its suite."})
        serializer.instance = _call(services.update_case, case=serializer.instance, by=self.request.user, **data)

    @extend_schema(request=CaseFromTurnSerializer, responses={201: EvalCaseSerializer})
    @action(detail=False, methods=["post"], url_path="from-turn")
    def from_turn(self, request):
        """Make a regression case from a real turn (an incident), pre-filled from its trace;
        ``overrides`` corrects what it should have done."""
        payload = CaseFromTurnSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        turn = Turn.objects.for_user(request.user).filter(pk=payload.validated_data["turn"]).first()
        suite = (
            _visible(EvalSuite, request.user, "evals.add_evalcase").filter(pk=payload.validated_data["suite"]).first()
        )
        if turn is None:
            raise NotFound("No such turn.")
        if suite is None:
            raise NotFound("No such suite.")
        overrides = payload.validated_data["overrides"]
        unknown = set(overrides) - set(services.CASE_FIELDS)
        if unknown:
            raise ValidationError({"overrides": f"Unknown fields: {', '.join(sorted(unknown))}."})
        case = _call(services.create_case_from_turn, by=request.user, turn=turn, suite=suite, **overrides)
        return Response(EvalCaseSerializer(case).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("agent", int),
            OpenApiParameter("suite", int),
            OpenApiParameter("status", enum=RunStatus.values),
        ]
    )
)
class EvalRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Evaluation runs, newest first; a run's detail holds each case's result."""

    def get_serializer_class(self):
        return EvalRunDetailSerializer if self.action == "retrieve" else EvalRunSerializer

    def get_queryset(self):
        runs = _visible(EvalRun, self.request.user).select_related("tenant", "suite", "agent", "started_by")
        for name in ("agent", "suite"):
            value = _int_param(self.request, name)
            if value is not None:
                runs = runs.filter(**{f"{name}_id": value})
        run_status = self.request.query_params.get("status")
        if run_status:
            if run_status not in RunStatus.values:
                raise ValidationError({"status": f"Use one of: {', '.join(RunStatus.values)}."})
            runs = runs.filter(status=run_status)
        if self.action == "retrieve":
            runs = runs.prefetch_related("results")
        return runs

    @extend_schema(
        parameters=[OpenApiParameter("with", int, required=True, description="The earlier run to compare with.")],
        responses=CaseChangeSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def compare(self, request, pk=None):
        """What changed case by case from the run named by ``with`` to this one: regressions first."""
        later = self.get_object()
        earlier_id = _int_param(request, "with")
        if earlier_id is None:
            raise ValidationError({"with": "Name the run to compare with."})
        earlier = _visible(EvalRun, request.user).filter(pk=earlier_id, tenant_id=later.tenant_id).first()
        if earlier is None:
            raise NotFound("No such run to compare with.")
        changes = services.compare_runs(earlier, later)
        return Response(
            [
                {
                    "case_id": change.case_id,
                    "name": change.name,
                    "category": change.category,
                    "before": change.before,
                    "after": change.after,
                    "change": change.change,
                    "failures": change.failures,
                }
                for change in changes
            ]
        )


# --- Reviews -------------------------------------------------------------------------------


class TurnReviewSerializer(serializers.ModelSerializer):
    turn = serializers.UUIDField(source="turn_id")
    kind = serializers.ChoiceField(choices=ReviewKind.choices)
    agent = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    accepted = serializers.BooleanField(required=False, allow_null=True, default=None)
    correct = serializers.BooleanField(required=False, allow_null=True, default=None)

    class Meta:
        model = TurnReview
        fields = [
            "id",
            "turn",
            "kind",
            "agent",
            "prompt_version",
            "model",
            "agent_action",
            "human_action",
            "agreed",
            "accepted",
            "correct",
            "note",
            "reviewed_by",
            "reviewed_at",
        ]
        read_only_fields = [
            "id",
            "agent",
            "prompt_version",
            "model",
            "agent_action",
            "agreed",
            "reviewed_by",
            "reviewed_at",
        ]
        validators = []


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("agent", int), OpenApiParameter("kind", enum=ReviewKind.values)])
)
class TurnReviewViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """People's reviews of real turns: what they actually did beside a shadow agent's
    proposal, whether they took a suggestion, or whether the agent was right. Posting the same
    turn and kind again replaces the review (its history keeps the earlier one)."""

    serializer_class = TurnReviewSerializer

    def get_queryset(self):
        reviews = _visible(TurnReview, self.request.user).select_related("agent", "reviewed_by")
        agent = _int_param(self.request, "agent")
        if agent is not None:
            reviews = reviews.filter(agent_id=agent)
        kind = self.request.query_params.get("kind")
        if kind:
            reviews = reviews.filter(kind=kind)
        return reviews

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        turn = (
            Turn.objects.for_user(request.user)
            .select_related("conversation", "agent")
            .filter(pk=data["turn_id"])
            .first()
        )
        if turn is None:
            raise NotFound("No such turn.")
        review = _call(
            services.record_review,
            by=request.user,
            turn=turn,
            kind=data["kind"],
            human_action=data.get("human_action", ""),
            accepted=data.get("accepted"),
            correct=data.get("correct"),
            note=data.get("note", ""),
        )
        return Response(TurnReviewSerializer(review).data, status=status.HTTP_201_CREATED)


# --- Rollout gates -------------------------------------------------------------------------


class GateCheckSerializer(serializers.Serializer):
    what = serializers.CharField()
    value = serializers.CharField()
    needed = serializers.CharField()
    passed = serializers.BooleanField()


class GateSerializer(serializers.Serializer):
    target_mode = serializers.ChoiceField(choices=list(DEFAULT_GATES))
    metric = serializers.ChoiceField(choices=GateMetric.choices)
    threshold = serializers.DecimalField(max_digits=5, decimal_places=4)
    min_reviews = serializers.IntegerField(min_value=1)
    min_pass_rate = serializers.DecimalField(max_digits=5, decimal_places=4)
    edited = serializers.BooleanField(read_only=True)
    passed = serializers.BooleanField(read_only=True)
    checks = GateCheckSerializer(many=True, read_only=True)


class GateChangeSerializer(serializers.Serializer):
    target_mode = serializers.ChoiceField(choices=list(DEFAULT_GATES))
    metric = serializers.ChoiceField(choices=GateMetric.choices, required=False)
    threshold = serializers.DecimalField(max_digits=5, decimal_places=4, required=False)
    min_reviews = serializers.IntegerField(required=False)
    min_pass_rate = serializers.DecimalField(max_digits=5, decimal_places=4, required=False)
    reason = serializers.CharField(max_length=300, help_text="Why the gate changes: kept with its history.")


def _gate_rows(agent: Agent) -> list[dict]:
    rows = []
    evidence = services.evidence_for(agent)
    for mode in DEFAULT_GATES:
        gate = services.gate_for(agent, mode, evidence.gates)
        report = services.gate_report(agent, mode, evidence)
        rows.append(
            {
                "target_mode": mode,
                "metric": gate.metric,
                "threshold": gate.threshold,
                "min_reviews": gate.min_reviews,
                "min_pass_rate": gate.min_pass_rate,
                "edited": gate.pk is not None,
                "passed": report.passed,
                "checks": [vars(check) for check in report.checks],
            }
        )
    return rows


class RolloutGateViewSet(viewsets.ViewSet):
    """An agent's gates into each mode above shadow, with the numbers each reads now."""

    lookup_field = "agent_id"
    lookup_value_regex = r"\d+"
    serializer_class = GateSerializer

    def _agent(self, request, agent_id, action: str = "view") -> Agent:
        agent = (
            Agent.objects.for_user(request.user, action)
            .select_related("tenant", "model_provider", "current_prompt")
            .filter(pk=agent_id)
            .first()
        )
        if agent is None:
            raise NotFound("No such agent.")
        return agent

    @extend_schema(responses=GateSerializer(many=True))
    def retrieve(self, request, agent_id=None):
        return Response(GateSerializer(_gate_rows(self._agent(request, agent_id)), many=True).data)

    @extend_schema(request=GateChangeSerializer, responses=GateSerializer(many=True))
    def partial_update(self, request, agent_id=None):
        """Change the agent's gate into one mode (its owner, or whoever may change gates)."""
        agent = self._agent(request, agent_id)
        payload = GateChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        fields = dict(payload.validated_data)
        _call(
            services.set_gate,
            by=request.user,
            agent=agent,
            target_mode=fields.pop("target_mode"),
            reason=fields.pop("reason"),
            **fields,
        )
        return Response(GateSerializer(_gate_rows(agent), many=True).data)


router = SimpleRouter()
router.register("eval-suites", EvalSuiteViewSet, basename="eval-suite")
router.register("eval-cases", EvalCaseViewSet, basename="eval-case")
router.register("eval-runs", EvalRunViewSet, basename="eval-run")
router.register("turn-reviews", TurnReviewViewSet, basename="turn-review")
router.register("rollout-gates", RolloutGateViewSet, basename="rollout-gate")

urlpatterns = [path("", include(router.urls))]
