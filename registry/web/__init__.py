"""p2pz's web gallery and HTTP API (``p2pz serve``; architecture §10).

``create_app(Settings(...))`` → a FastAPI app over one registry: JSON under ``/api`` (OpenAPI at ``/docs``),
server-rendered pages (gallery, direction, apply), and a background worker running edit and preview jobs from
table ``jobs`` one at a time. Layout: ``settings`` (options), ``deps`` (registry, auth), ``errors`` (JSON
errors), ``schemas`` (pydantic models), ``views`` (records → JSON), ``routers/`` (one per resource + pages),
``templates/`` and ``static/``.
"""

from .app import create_app
from .settings import Settings

__all__ = ["create_app", "Settings"]
