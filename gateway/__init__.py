"""chatkit-gateway: a streaming reverse-proxy gateway for OpenAI ChatKit."""

__version__ = "0.1.0"
