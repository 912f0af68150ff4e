"""The HTTP API (FastAPI): ingestion, online decisions, member self-service and
administration, thin over the library. Build it with `create_app(Settings(...))`;
serve it with `consentgate serve`. See docs/api.md."""

from consentgate.api.app import create_app
from consentgate.api.settings import Settings

__all__ = ["Settings", "create_app"]
