"""Knowledge governance. The runtime reads knowledge only through ``knowledge.retrieve``
(``from apps import knowledge``): every eligibility rule is inside its one query."""

__all__ = ["retrieve"]


def retrieve(query: str, context, k: int = 5, *, record_gap: bool = True):
    """The best eligible passages for ``query``; see apps.knowledge.retrieval.retrieve."""
    from .retrieval import retrieve as _retrieve

    return _retrieve(query, context, k, record_gap=record_gap)
