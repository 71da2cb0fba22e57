"""LatticeOS: coherence math, the CoherenceExecutor, co-resonant batching, thread priorities."""
