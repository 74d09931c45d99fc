import factory

from apps.agents.choices import Environment, RolloutMode
from apps.agents.models import Agent, ModelProvider

from ..accounts.factories import TenantFactory, member


class ModelProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelProvider

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Provider {n}")
    base_url = "http://127.0.0.1:9/v1"
    api_key_env_var = "TEST_MODEL_API_KEY"
    model_names = ["small-model", "large-model"]


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    slug = factory.Sequence(lambda n: f"agent-{n}")
    purpose = "Answers customer questions."
    owner = factory.LazyAttribute(lambda agent: member(agent.tenant, "agent_owner"))
    environment = Environment.PRODUCTION
    rollout_mode = RolloutMode.ASSIST
    channels = ["web_chat"]
