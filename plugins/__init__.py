"""Built-in plugins, by the name config.yaml uses for them."""

from .workflow import Workflow

REGISTRY: dict[str, type] = {
    Workflow.name: Workflow,
}
