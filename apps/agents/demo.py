"""Demo data from apps above agents in the stack (knowledge, tools, ...). ``seed_demo``
lives here, below them, so each registers its seeder from ``AppConfig.ready`` and
``seed_demo`` calls them in order, inside its transaction, after the people and agents."""

from collections.abc import Callable

DemoSeeder = Callable[..., None]  # seeder(tenant=, other_tenant=, people={kind: User}, stdout=)
_seeders: list[DemoSeeder] = []


def register_demo_seeder(seeder: DemoSeeder) -> None:
    if seeder not in _seeders:
        _seeders.append(seeder)


def demo_seeders() -> list[DemoSeeder]:
    return list(_seeders)
