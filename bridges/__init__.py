"""Event sources and the serializer: where events come from and how they become kernel words."""
from bridges.events import Entity, EntityKind, Event, EventKind, Observation, Source, ThreadInfo, WaitKind

__all__ = ["Entity", "EntityKind", "Event", "EventKind", "Observation", "Source", "ThreadInfo", "WaitKind"]
