"""Event sources and the serializer: where events come from and how they become kernel words.

This package is imported inside the watched program by the bootstrap (bridges/boot), so it
imports nothing: take names from their modules (gyroscope.bridges.events, ...).
Profiled locks: gyroscope.bridges._locks (in the program: install, sites, drain, counters) and
gyroscope.bridges.lockstats (in gyroscope: LockStats turns their tuples into events).
"""
