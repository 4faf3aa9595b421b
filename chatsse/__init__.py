"""chatsse: a small, fast streaming chat gateway in front of Azure OpenAI."""

__version__ = "0.1.0"
