"""Where results go: OpenTelemetry, files, the terminal. One small class per sink."""
from gyroscope.agent.sinks.base import Sink, Window

__all__ = ["Sink", "Window"]
