"""LatticeOS: coherence math, the CoherenceExecutor, co-resonant batching, thread priorities.

Public surface: live (decisions(), version(), inject(): gyroscope's live decisions as the program
sees them), coherence (phi_resolvent, coherence_score, entity_coherence,
PhiResolventRegularizer), batching (group_batches, chirality_distance), executor
(CoherenceExecutor: lanes for decided locks, coherence-first for hot loops; PolicyQueue, Task),
matching (which decisions concern a callable), priorities (PriorityActuator, plan_priorities),
dask_priority (coherent_submit; needs `distributed`, imported on use).
"""
from gyroscope.schedulers import live
from gyroscope.schedulers.batching import chirality_distance, group_batches
from gyroscope.schedulers.coherence import (
           PHI,
           PhiResolventRegularizer,
           coherence_score,
           entity_coherence,
           phi_resolvent,
)
from gyroscope.schedulers.executor import CoherenceExecutor, PolicyQueue, Task
from gyroscope.schedulers.priorities import PriorityActuator, plan_priorities

__all__ = ["PHI", "live", "CoherenceExecutor", "PhiResolventRegularizer", "PolicyQueue", "PriorityActuator", "Task",
           "chirality_distance", "coherence_score", "entity_coherence", "group_batches", "phi_resolvent",
           "plan_priorities"]
