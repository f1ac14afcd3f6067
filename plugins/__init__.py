"""Built-in plugins, by the name config.yaml uses for them."""

REGISTRY: dict[str, type] = {}
