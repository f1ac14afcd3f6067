"""Built-in plugins, by the name config.yaml uses for them."""

from .access_log import AccessLog
from .auth import Auth
from .metrics import Metrics
from .workflow import Workflow

REGISTRY: dict[str, type] = {plugin.name: plugin for plugin in (AccessLog, Metrics, Auth, Workflow)}
