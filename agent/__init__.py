"""The session that ties gyroscope together: windows, actuators, the Phase OS gate, sinks, the CLI."""
__version__ = "0.1.0"
