import pytest

from apps.knowledge.choices import Audience
from apps.knowledge.retrieval import RetrievalContext


@pytest.fixture
def owner(people):
    return people["knowledge_owner"]


@pytest.fixture
def customer_context(tenant):
    """A customer in the US, consumer segment, on web chat."""
    return RetrievalContext(
        tenant_id=tenant.pk, audience=Audience.CUSTOMER, channel="web_chat", region="us", segment="consumer"
    )
