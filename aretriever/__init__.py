"""aretriever: asynchronous retrieval, reduction and analysis of survey photometry.

``from aretriever import Retriever`` embeds it in an async application; ``Project`` runs a named,
versioned project from scripts and notebooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aretriever.project import Project
    from aretriever.service.retriever import Retriever

__all__ = ["Project", "Retriever"]


def __getattr__(name: str) -> Any:
    # lazy: ``import aretriever.settings`` (pool workers, the CLI) must not import the engine
    if name == "Retriever":
        from aretriever.service.retriever import Retriever

        return Retriever
    if name == "Project":
        from aretriever.project import Project

        return Project
    raise AttributeError(f"module 'aretriever' has no attribute {name!r}")
