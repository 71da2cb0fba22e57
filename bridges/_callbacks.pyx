# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The sys.monitoring callbacks of `gyroscope run` (PEP 669), in Cython.

The callbacks are module-level functions (vectorcall, no bound-method or __call__ overhead)
and do as little as possible: find the location's slot, bump a C counter, read the clock on
the first, the WARM-th (8th) and the K-th hit of the window, and return DISABLE once the location has been seen
K times in this window. The agent thread (bridges/sysmon.py) drains the counters once per
window and re-arms what was disabled.

Slots: one per (code object, location, kind). Kinds: JUMP (a backward jump: one loop
iteration; keyed by the jump's offset), RETURN (a function return: one call; keyed by the
code object), RESUME and YIELD (generators / coroutines; keyed by the code object).
There are at most MAX_SLOTS slots; locations beyond that are counted in `dropped` and
disabled for the session.

Which code is watched is decided once per code object, on its first PY_START, by the Python
predicate installed with `configure()`; PY_START always returns DISABLE, so the discovery
cost is one callback per code object (plus one after any `sys.monitoring.restart_events()`).

Nothing here may raise into the program: every slow path is wrapped and counts its failures.
"""
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident()   # pthread_self(): no system call (gettid would be one)


DEF MAX_SLOTS = 65536

KIND_JUMP = 0
KIND_RETURN = 1
KIND_RESUME = 2
KIND_YIELD = 3

cdef uint32_t _hits[MAX_SLOTS]
cdef int64_t _t_first[MAX_SLOTS]
cdef int64_t _t_last[MAX_SLOTS]
cdef int64_t _t_warm[MAX_SLOTS]
DEF WARM_HITS = 8
WARM = WARM_HITS
cdef unsigned long _thread[MAX_SLOTS]
cdef unsigned long _thread2[MAX_SLOTS]   # a second distinct thread seen in the window (0 if none)
cdef int _n_slots = 0
cdef uint32_t _k = 64
cdef uint64_t _dropped = 0
cdef uint64_t _errors = 0
cdef uint64_t _raw = 0
cdef bint _active = False
cdef unsigned long _excl[8]        # thread idents of the agent's own threads (never counted)
cdef int _n_excl = 0

cdef dict _slot_of = {}        # key -> slot
slot_info = []                 # slot -> (code, offset, kind, jump destination)
watched = {}                   # id(code) -> code, the program's code objects being watched
_rearm = {}                    # id(code) -> code, codes with a location disabled this window
_DISABLE = None
_predicate = None              # callable(code) -> bool: is this the program's own code?
_on_watch = None               # callable(code): arm the local events of a newly watched code
last_error = ""


cdef inline int64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def configure(predicate, on_watch, disable, uint32_t k) -> None:
    """Install the code predicate, the arming hook, sys.monitoring.DISABLE and K; reset all state."""
    global _predicate, _on_watch, _DISABLE, _k, _n_slots, _dropped, _errors, _raw, _active, _slot_of
    global last_error, _n_excl
    _predicate = predicate
    _on_watch = on_watch
    _DISABLE = disable
    _k = k if k > 1 else 2
    _n_slots = 0
    _dropped = 0
    _errors = 0
    _raw = 0
    _slot_of = {}
    del slot_info[:]
    watched.clear()
    _rearm.clear()
    last_error = ""
    _n_excl = 0
    _active = True


def exclude_thread(unsigned long ident) -> None:
    """Never count events of this (agent) thread: its locations are disabled without being recorded."""
    global _n_excl
    cdef int i
    for i in range(_n_excl):
        if _excl[i] == ident:
            return
    if _n_excl < 8:
        _excl[_n_excl] = ident
        _n_excl += 1


def deactivate() -> None:
    """After this, every callback returns DISABLE at once (used while tearing down)."""
    global _active
    _active = False


cdef int _new_slot(object key, object code, int offset, int kind, int dest) except -2:
    global _n_slots, _dropped
    cdef int s
    if _n_slots >= MAX_SLOTS:
        _dropped += 1
        return -1
    s = _n_slots
    _n_slots += 1
    _hits[s] = 0
    _thread[s] = 0
    _thread2[s] = 0
    slot_info.append((code, offset, kind, dest))
    _slot_of[key] = s
    return s


cdef inline object _hit(object code, int offset, int kind, int dest):
    """Count one hit; return DISABLE when the slot has had K hits in this window."""
    global _raw, _errors, last_error
    cdef int s, i
    cdef uint32_t h
    cdef unsigned long tid = PyThread_get_thread_ident()
    for i in range(_n_excl):
        if _excl[i] == tid:
            return _DISABLE
    _raw += 1
    key = ((<uint64_t><void*>code) << 18) | ((<uint64_t>offset & 0xFFFF) << 2) | <uint64_t>kind
    slot = _slot_of.get(key)
    if slot is None:
        try:
            s = _new_slot(key, code, offset, kind, dest)
        except BaseException as e:  # never raise into the program
            _errors += 1
            last_error = repr(e)
            return _DISABLE
        if s < 0:
            return _DISABLE
    else:
        s = <int>slot
    h = _hits[s] + 1
    _hits[s] = h
    if h == 1:
        _t_first[s] = _now()
        _thread[s] = tid
    elif tid != _thread[s] and _thread2[s] == 0:
        _thread2[s] = tid
    if h == WARM_HITS:   # the rate clock starts after a few hits: the first ones after a re-arm are slow
        _t_warm[s] = _now()
    if h >= _k:
        _t_last[s] = _now()
        _rearm[<Py_ssize_t><void*>code] = code
        return _DISABLE
    return None


def on_py_start(code, int offset):
    """PY_START: decide once whether this code is the program's; always DISABLE afterwards."""
    global _errors, last_error
    if not _active:
        return _DISABLE
    try:
        key = <Py_ssize_t><void*>code
        if key not in watched and _predicate(code):
            watched[key] = code
            _on_watch(code)
    except BaseException as e:
        _errors += 1
        last_error = repr(e)
    return _DISABLE


def on_jump(code, int offset, int dest):
    """JUMP: a backward jump is one loop iteration; forward jumps are disabled for good."""
    if not _active or dest >= offset:
        return _DISABLE
    return _hit(code, offset, 0, dest)


def on_py_return(code, int offset, retval):
    if not _active:
        return _DISABLE
    return _hit(code, 0, 1, 0)


def on_py_resume(code, int offset):
    if not _active:
        return _DISABLE
    return _hit(code, 0, 2, 0)


def on_py_yield(code, int offset, retval):
    if not _active:
        return _DISABLE
    return _hit(code, 0, 3, 0)


def drain():
    """Per slot hit this window: (slot, hits, t_first_ns, span_ns, thread ident, second thread ident or
    0), where span_ns is the time from hit WARM to hit K when the slot saturated (K - WARM
    intervals), else 0; resets the
    counters and returns the codes to re-arm. Runs under the GIL without releasing it, so it is
    atomic with respect to the callbacks."""
    cdef int s
    cdef uint32_t h
    out = []
    for s in range(_n_slots):
        h = _hits[s]
        if h:
            out.append((s, h, _t_first[s], _t_last[s] - _t_warm[s] if h >= _k else 0, _thread[s], _thread2[s]))
            _hits[s] = 0
            _thread[s] = 0
            _thread2[s] = 0
    rearm = list(_rearm.values())
    _rearm.clear()
    return out, rearm


def counters():
    """(raw callbacks, slots, dropped locations, callback errors, last error)."""
    return _raw, _n_slots, _dropped, _errors, last_error


def now_ns() -> int:
    """The callbacks' clock (CLOCK_MONOTONIC, the same as time.monotonic_ns on Linux)."""
    return _now()


# ---- garbage collection (gc.callbacks) ------------------------------------------------------
# Per generation: collections, total pause, longest pause, the last start time. Collections
# happen thousands of times per second in allocation-heavy programs, so the callback only
# adds integers; the agent reads and resets them once per window.
cdef int64_t _gc_t0 = 0
cdef int64_t _gc_count[3]
cdef int64_t _gc_total[3]
cdef int64_t _gc_max[3]
cdef int64_t _gc_first[3]


def gc_callback(phase, info):
    """gc.callbacks hook: time each collection (never raises)."""
    global _gc_t0
    cdef int64_t now
    cdef int64_t d
    cdef int g
    try:
        if phase == "start":
            _gc_t0 = _now()
            return
        if _gc_t0 == 0:
            return
        now = _now()
        d = now - _gc_t0
        g = <int>info.get("generation", 0)
        if g < 0 or g > 2:
            g = 2
        if _gc_count[g] == 0:
            _gc_first[g] = _gc_t0
        _gc_count[g] += 1
        _gc_total[g] += d
        if d > _gc_max[g]:
            _gc_max[g] = d
        _gc_t0 = 0
    except BaseException:
        pass


def gc_drain():
    """[(generation, collections, total pause ns, longest pause ns, first start ns)] since the last drain."""
    cdef int g
    out = []
    for g in range(3):
        if _gc_count[g]:
            out.append((g, _gc_count[g], _gc_total[g], _gc_max[g], _gc_first[g]))
            _gc_count[g] = 0
            _gc_total[g] = 0
            _gc_max[g] = 0
    return out
