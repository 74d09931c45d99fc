from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Tenant, User
from apps.agents.models import Agent
from apps.evals import services
from apps.evals.choices import RunTrigger
from apps.evals.models import EvalRun, EvalSuite


class Command(BaseCommand):
    help = (
        "Run an agent's evaluation suites here and now (each case as an evaluation turn: no tool executes) "
        "and print the pass rates and what regressed since the previous run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")
        parser.add_argument("--agent", required=True, help="The agent's slug.")
        parser.add_argument("--suite", help="One suite's name; default: every active suite for the agent.")
        parser.add_argument("--by", required=True, help="Username of the person running it.")
        parser.add_argument(
            "--strict", action="store_true", help="Exit with status 1 when a case fails (for CI pipelines)."
        )

    def handle(self, *args, tenant, agent, suite, by, strict, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"No tenant with slug {tenant!r}.")
        agent_row = Agent.objects.filter(tenant=tenant_row, slug=agent).first()
        if agent_row is None:
            raise CommandError(f"{tenant_row} has no agent with slug {agent!r}.")
        user = User.objects.filter(username=by, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {by!r}.")
        suites = EvalSuite.objects.filter(tenant=tenant_row, is_active=True).for_agent(agent_row)
        if suite:
            suites = suites.filter(name=suite)
        suites = list(suites)
        if not suites:
            raise CommandError(f"No active suite{f' called {suite!r}' if suite else ''} for {agent_row}.")
        failed = False
        for suite_row in suites:
            try:
                run = services.start_run(
                    suite=suite_row, agent=agent_row, by=user, trigger=RunTrigger.COMMAND, enqueue=False
                )
            except ValidationError as error:
                raise CommandError("; ".join(error.messages)) from error
            except PermissionDenied as error:
                raise CommandError(str(error)) from error
            services.execute_run(run.pk)
            run.refresh_from_db()
            failed |= self._report(run)
        if strict and failed:
            raise CommandError("Some cases failed.")

    def _report(self, run: EvalRun) -> bool:
        self.stdout.write(
            f"{run.suite} for {run.agent} (run #{run.pk}, prompt v{run.prompt_version or '-'}, {run.model}): "
            f"{run.passed_count} of {run.case_count} passed, cost {run.cost:.4f}"
        )
        for category, entry in sorted(run.category_rates.items()):
            self.stdout.write(f"  {category:<13} {entry['passed']:>3} of {entry['cases']:<3} {entry['rate']:.0%}")
        for result in run.results.exclude(status="passed").order_by("category", "case_name"):
            self.stdout.write(self.style.ERROR(f"  {result.status.upper()} {result.case_name}"))
            for failure in result.failures:
                self.stdout.write(f"      {failure}")
        earlier = (
            EvalRun.objects.filter(suite=run.suite, agent=run.agent, status="completed", pk__lt=run.pk)
            .order_by("-pk")
            .first()
        )
        if earlier is not None:
            regressions = [change for change in services.compare_runs(earlier, run) if change.change == "regression"]
            self.stdout.write(f"  since run #{earlier.pk}: {len(regressions)} regression(s)")
            for change in regressions:
                self.stdout.write(self.style.WARNING(f"    {change.name} ({change.category})"))
        return run.passed_count != run.case_count
