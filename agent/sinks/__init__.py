"""Where results go: OpenTelemetry, files, the terminal. One small class per sink.

Nothing is imported here: `gyroscope run` imports `sinks.factory` before the program starts,
and `sinks.base` (dataclasses, ~7 ms) is not needed for that."""


def __getattr__(name: str):
    if name in ("Sink", "Window"):
        from gyroscope.agent.sinks import base
        return getattr(base, name)
    raise AttributeError(name)


__all__ = ["Sink", "Window"]
