"""Profiles: sampled call stacks kept for the whole session and written in the formats other tools read.

  store.StackStore        the bounded store (interned frames and stacks; wall, CPU, samples, lock
                          wait / hold per (pid, thread, stack, state)); to_json() / from_json()
  pprof.write_pprof       --pprof PATH: gzipped profile.proto (go tool pprof, Pyroscope, Parca)
  speedscope.write_speedscope_profile   --speedscope PATH: one sampled profile per thread
  collapsed.write_collapsed             --collapsed PATH: folded stacks "a;b;c count"
  otlp.build_profiles_request / export_profiles   the OTLP profiles signal (v1development)
  paths.hottest_path / line_shares   the hottest call path that reaches a decided place, and its
                          samples per source line (summary, HTML report)
  flame.flame_tree        the call tree for the HTML report's flame graph
  sink.ProfileFilesSink / write_profile_files   the files at the end of run / attach, and from report
"""
from gyroscope.agent.profiles.store import StackStore

__all__ = ["StackStore"]
