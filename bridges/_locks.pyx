# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Profiled synchronisation objects for the in-process bridge (issue 13), in Cython.

`install()` makes the locks the program creates from then on profiled: `threading.Lock`,
`RLock`, `Condition` (its wait and its lock), `Semaphore`, `BoundedSemaphore`, `Event`,
`Barrier`, the mutex and conditions of `queue.Queue` (and its subclasses), and
`asyncio.Lock / Semaphore / BoundedSemaphore / Condition / Event`.

Interface (called by the in-process bridge): install(), uninstall(), sites(), drain(), counters(),
status(), now_ns(). The gyroscope-process side is bridges/lockstats.py.

How (and why not like ddtrace): ddtrace's lock profiler wraps the lock object returned by
`threading.Lock()` in a Python proxy; its issue tracker shows the price: a Python-level call per
acquire, `isinstance(lock, threading.Lock)` breaking on 3.13 (where threading.Lock is the type
`_thread.lock`), wrapped locks that did not pickle or could not be subclassed, an AttributeError
from its release bookkeeping when several threads release (dd-trace-py #11343, #12792), internal
locks of Semaphore counted twice, and gevent monkey-patching fights.
Here `lock` and `RLock` are *native lock types* (cdef classes over CPython's PyThread lock, as
`_thread.lock` / `_thread.RLock` are in 3.12), not proxies:
- `threading.Lock` becomes the type `lock` (3.12 had a factory function, 3.13 has the type): so
  `isinstance(threading.Lock(), threading.Lock)` and `isinstance(x, type(threading.Lock()))`
  hold; `with`, `acquire(blocking, timeout)` (same errors and messages), `locked()`,
  `_at_fork_reinit()`, weak references, repr (`<unlocked _thread.lock object at 0x...>`) and the
  pickling error (`cannot pickle '_thread.lock' object`) are those of bare python; `lock` cannot be
  subclassed and `RLock` can (as `_thread.lock` / `_thread.RLock`). Known differences: a traceback
  through a lock method that raises (e.g. "release unlocked lock") shows the .pyx lines Cython adds,
  `_thread.LockType` / `_thread.RLock` are not our types (isinstance against them is False for
  profiled locks), and type names in error messages say gyroscope.bridges._locks.
- `threading._CRLock` becomes `RLock` (threading.RLock stays the factory function), with
  `_is_owned`, `_release_save`, `_acquire_restore`, `_recursion_count`, so `Condition(lock)`
  with our locks works exactly as with the C ones.
- `threading.Condition` becomes a subclass whose `wait` times the wait on its waiter (the only
  blocking call of Condition, Semaphore, Event, Barrier and queue.Queue, which all build on
  `threading.Condition` / `threading.Lock` looked up at call time).
- `_thread` itself is never patched: import locks, `_thread.allocate_lock()` called directly
  and threading's own internals (Thread._started, Timer, the waiter locks) stay bare python.
`threading` need not be imported at install(): a finder at the head of sys.meta_path waits for
`threading` (and `asyncio.locks`) to be executed, patches them, restores their `__loader__` /
`__spec__.loader` and leaves sys.meta_path once both are patched. It imports nothing.

Cost. Fast path: one non-blocking `PyThread_acquire_lock_timed(lock, 0)` with the GIL held, a
counter increment and one hold-clock read (the TSC, ~7.5 ns, when the kernel's clocksource is the
TSC; else CLOCK_MONOTONIC, ~21 ns); no allocation, no Python call; `acquire()` without arguments
skips the timeout conversion. Only when the try fails is the blocking acquire (GIL released)
timed, with CLOCK_MONOTONIC around it; its thread (native id, one gettid per OS thread), its call
site (C frame walk, cached per code address and offset) and its duration are recorded (Python
dicts, bounded). Creation walks the C frames once to find the site (cached per code address and
instruction offset; a Condition hands its site to the RLock it makes). Measured on the 2-core
shared box, median of 21 alternating runs: explicit acquire()/release() +9 ns (3.13) / +14 ns
(3.12) per pair vs bare (~80 ns); `with lock:` is 30-60 ns *faster* than bare (no *args tuple
for __exit__); threading.Lock() ~220 ns vs 70 ns bare. pyperformance logging (the handler's RLock
per call, same process A/B): 0.98-1.008x on 3.13, 1.001-1.003x on 3.12
(benchmarks/locks_overhead.py).

Identity. A lock is identified by its creation site: the first frame outside threading.py,
queue.py and asyncio/ (file, line, qualname) plus its kind. The kind is the outermost known
constructor on the way there: a Semaphore's Lock and Condition both belong to the site of the
`threading.Semaphore(...)` call, kind "semaphore", so a blocked `sem.acquire()` is counted as its
waits (mutex, the condition wait, the re-acquire: up to 3 contended acquires for one blocked call,
each with its exact duration; their sum is the time the call was blocked). Objects made for
threading's own Thread / Timer machinery are not profiled (their waits are thread start and
sleeps, not contention). asyncio waits are not thread blocking: for asyncio objects the wait is
the time a task spent awaiting acquire()/wait() when it could not proceed at once, and the
"thread" is the event loop's thread.

Kinds: "lock", "rlock", "condition", "semaphore", "bounded_semaphore", "event", "barrier",
"queue", "asyncio.lock", "asyncio.semaphore", "asyncio.bounded_semaphore", "asyncio.condition",
"asyncio.event".

Tuple layouts (ints and strs only, marshal-able):
- sites():  [(site_id, kind, file, line, function)] created since the previous call.
- drain():  [(site_id, acquires, contended, wait_ns, wait_max_ns, hold_ns, threads, callsites)]
            per site touched since the previous drain (counts are for that interval):
            acquires   successful acquires (fast and contended; Condition/Event/... waits are not
                       acquires), contended  blocking waits (each with its exact duration),
            wait_ns / wait_max_ns  total and longest wait, hold_ns  time held, summed at release,
            threads    ((native_thread_id, waits, wait_ns, first_wait_t_ns), ...) at most
                       MAX_THREADS per site and drain, the rest counted in counters()[3],
            callsites  ((file, line, waits, wait_ns), ...) the first frame outside the
                       threading/queue/asyncio library that waited; at most MAX_CALLSITES per
                       site and drain, the rest counted in counters()[4].
- counters(): (sites, dropped_sites, errors, lost_threads, lost_callsites, last_error).
Times are CLOCK_MONOTONIC ns (time.monotonic_ns() on Linux).

Locks created before install() (or by `_thread` directly) are bare python locks: their use
cannot be seen without patching `_thread`, so it is not counted (not detected: say so where
lock figures are shown). gevent / eventlet: when threading is already monkey-patched, nothing is
patched and status() says why. Fork: os.register_at_fork resets the child's counters and
re-announces every site in the child's first sites(). Not for free-threaded builds (the counters
rely on the GIL). Nothing here raises into the program except what bare python locks raise.
"""
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport ceil, isnan
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import sys as _sys
import os as _os


cdef extern from "Python.h":
    ctypedef void *PyThread_type_lock
    ctypedef enum PyLockStatus:
        PY_LOCK_FAILURE
        PY_LOCK_ACQUIRED
        PY_LOCK_INTR
    PyThread_type_lock PyThread_allocate_lock()
    void PyThread_free_lock(PyThread_type_lock)
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock, long long microseconds, int intr_flag) nogil
    void PyThread_release_lock(PyThread_type_lock) nogil
    unsigned long PyThread_get_thread_ident() nogil
    unsigned long PyThread_get_thread_native_id()
    int Py_MakePendingCalls() except -1
    long long PY_TIMEOUT_MAX

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(__i386__)
    #include <x86intrin.h>
    static inline unsigned long long gy_ticks(void) { return __rdtsc(); }
    #define GY_HAVE_TSC 1
    #else
    static inline unsigned long long gy_ticks(void) { return 0; }
    #define GY_HAVE_TSC 0
    #endif
    """
    unsigned long long gy_ticks() nogil
    int GY_HAVE_TSC

cdef extern from *:
    """
    /* The native thread id (gettid, a system call) once per OS thread: thread-local, so a new thread
       starts at 0 whatever ids are reused; the forking thread's copy is reset in the child. */
    static __thread unsigned long gy_tid_cache = 0;
    static inline unsigned long gy_native_id(void) {
        if (!gy_tid_cache) gy_tid_cache = PyThread_get_thread_native_id();
        return gy_tid_cache;
    }
    static inline void gy_native_id_reset(void) { gy_tid_cache = 0; }
    """
    unsigned long gy_native_id()
    void gy_native_id_reset()


DEF MAX_SITES = 8192
MAX_THREADS = 64
MAX_CALLSITES = 16
cdef int _MAX_THREADS = 64
cdef int _MAX_CALLSITES = 16

cdef uint64_t _acq[MAX_SITES]
cdef uint64_t _cont[MAX_SITES]
cdef int64_t _wait[MAX_SITES]
cdef int64_t _wmax[MAX_SITES]
cdef int64_t _hold[MAX_SITES]
cdef int _n_sites = 0
cdef uint64_t _dropped_sites = 0
cdef uint64_t _errors = 0
cdef uint64_t _lost_threads = 0
cdef uint64_t _lost_calls = 0
cdef bint _active = False
last_error = ""

cdef dict _site_of = {}           # (file, line, function, kind) -> site id
cdef list _new_sites = []         # sites() not yet returned
cdef list _all_sites = []         # site id -> (site_id, kind, file, line, function)
cdef dict _threads = {}           # site id -> {native id: [waits, wait_ns, first_t_ns]} this drain
cdef dict _calls = {}             # site id -> {(file, line): [waits, wait_ns]} this drain

# The library whose frames are skipped when looking for the creation / waiting site.
_STDLIB = _os.path.dirname(_os.__file__)
cdef set _LIB_FILES = {_os.path.join(_STDLIB, "threading.py"), _os.path.join(_STDLIB, "queue.py")}
cdef str _ASYNCIO_DIR = _os.path.join(_STDLIB, "asyncio") + _os.sep
cdef str _THIS_FILE = ""
# Outermost known constructor on the way to the site -> kind.
cdef dict _CTOR_KIND = {
    "Condition.__init__": "condition", "Semaphore.__init__": "semaphore",
    "BoundedSemaphore.__init__": "bounded_semaphore", "Event.__init__": "event",
    "Barrier.__init__": "barrier", "Queue.__init__": "queue",
}
cdef dict _ASYNCIO_CTOR_KIND = {
    "Condition.__init__": "asyncio.condition", "Semaphore.__init__": "asyncio.semaphore",
    "BoundedSemaphore.__init__": "asyncio.bounded_semaphore", "Event.__init__": "asyncio.event",
    "Lock.__init__": "asyncio.lock",
}
# threading's own machinery: not the program's synchronisation (thread start, Timer sleeps).
cdef set _INTERNAL = {"Thread.__init__", "_MainThread.__init__", "_DummyThread.__init__", "Timer.__init__",
                      "Thread._reset_internal_locks", "_after_fork"}


cdef inline int64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


# The hold-time clock. Hold time is read on every acquire and release (the fast path), where
# CLOCK_MONOTONIC costs ~21 ns per read (vDSO) and the TSC ~7.5 ns (measured on the 2-core CI box):
# two reads per acquire/release pair are most of this module's cost on pyperformance's logging.
# When the kernel itself uses the TSC as its clocksource (so it is invariant and synchronised
# across CPUs), hold times are taken in TSC ticks and converted to ns at drain() with the rate
# measured against CLOCK_MONOTONIC since install(); otherwise CLOCK_MONOTONIC is used.
cdef bint _use_tsc = False
cdef int64_t _anchor_ns = 0
cdef int64_t _anchor_ticks = 0
cdef double _ns_per_unit = 1.0


cdef inline int64_t _hold_clock() noexcept nogil:
    if _use_tsc:
        return <int64_t>gy_ticks()
    return _now()


cdef bint _tsc_usable():
    if not GY_HAVE_TSC:
        return False
    try:
        fd = _os.open("/sys/devices/system/clocksource/clocksource0/current_clocksource", _os.O_RDONLY)
        try:
            return _os.read(fd, 64).strip() == b"tsc"
        finally:
            _os.close(fd)
    except OSError:
        return False


cdef void _calibrate():
    """The ns per hold-clock unit, from the TSC's progress against CLOCK_MONOTONIC since install()."""
    global _ns_per_unit
    cdef int64_t dn, dt
    if not _use_tsc:
        _ns_per_unit = 1.0
        return
    dn = _now() - _anchor_ns
    dt = <int64_t>gy_ticks() - _anchor_ticks
    if dn > 1000000 and dt > 0:
        _ns_per_unit = <double>dn / <double>dt


def now_ns() -> int:
    """The clock of the wait and hold times (CLOCK_MONOTONIC)."""
    return _now()


cdef inline bint _is_lib(str fn):
    return fn in _LIB_FILES or fn.startswith(_ASYNCIO_DIR)


cdef extern from "Python.h":
    ctypedef struct PyFrameObject:
        pass
    PyFrameObject *PyEval_GetFrame()                             # borrowed
    PyFrameObject *PyFrame_GetBack(PyFrameObject *)              # new reference or NULL
    PyObject *PyFrame_GetCode(PyFrameObject *)                   # new reference
    int PyFrame_GetLineNumber(PyFrameObject *)
    int PyFrame_GetLasti(PyFrameObject *)


# Per code object met on the way to a creation site: _USER (the site is here), _LIB (skip it),
# _INTERNAL (threading's own machinery: not profiled) or the kind its constructor gives. Bounded.
# Keyed by the code object's address, not the object: a code object's hash covers its bytecode
# and constants (~400 ns per lookup, measured); the entry keeps the code object alive, so its
# address cannot be reused while the entry exists.
DEF MAX_CODES = 8192
cdef object _USER = object()
cdef object _LIB = object()
cdef object _INTERNAL_CODE = object()
cdef dict _code_class = {}
cdef dict _site_at = {}           # (code address, lasti, kind) -> site id: the fast path of creation


cdef object _classify(object code, size_t addr):
    fn = code.co_filename
    if not _is_lib(fn):
        c = _USER
    else:
        qn = code.co_qualname
        if qn in _INTERNAL or qn == "<module>":   # the library's own module-level objects
            c = _INTERNAL_CODE
        else:
            c = (_ASYNCIO_CTOR_KIND if fn.startswith(_ASYNCIO_DIR) else _CTOR_KIND).get(qn, _LIB)
    if len(_code_class) < MAX_CODES:
        _code_class[addr] = (c, code)
    return c


cdef int _new_site(object code, PyFrameObject *f, str kind, object fast_key) except -2:
    global _dropped_sites, _n_sites
    cdef int s
    key = (code.co_filename, PyFrame_GetLineNumber(f), code.co_qualname, kind)
    site = _site_of.get(key)
    if site is None:
        if _n_sites >= MAX_SITES:
            _dropped_sites += 1
            return -1
        s = _n_sites
        _n_sites += 1
        _acq[s] = 0
        _cont[s] = 0
        _wait[s] = 0
        _wmax[s] = 0
        _hold[s] = 0
        info = (s, kind, key[0], key[1], key[2])
        _all_sites.append(info)
        _new_sites.append(info)
        _site_of[key] = s
    else:
        s = <int>site
    if len(_site_at) < MAX_CODES * 4 and fast_key[0] in _code_class:   # the code is kept alive there
        _site_at[fast_key] = s
    return s


cdef int _creation_site(str kind):
    """The site of the object being created (-1: not profiled). Never raises.

    Walks the C frames (no frame objects materialised by sys._getframe, no attribute lookups on
    a known code object): the first code that is not threading/queue/asyncio is the site; a
    known site is found by (code, instruction offset, kind). Measured: threading.Lock() 69 ns
    bare, ~625 ns with the sys._getframe walk this replaced, see benchmarks/locks_overhead.py."""
    global _errors, last_error
    cdef PyFrameObject *f
    cdef PyFrameObject *back
    cdef PyObject *cp
    cdef int s = -1
    if not _active:
        return -1
    f = PyEval_GetFrame()
    Py_XINCREF(<PyObject *>f)
    try:
        while f != NULL:
            cp = PyFrame_GetCode(f)
            code = <object>cp
            Py_XDECREF(cp)
            addr = <size_t>cp
            entry = _code_class.get(addr)
            c = (<tuple>entry)[0] if entry is not None else _classify(code, addr)
            if c is _USER:
                fast_key = (addr, PyFrame_GetLasti(f), kind)
                site = _site_at.get(fast_key)
                s = <int>site if site is not None else _new_site(code, f, kind, fast_key)
                break
            if c is _INTERNAL_CODE:
                break
            if c is not _LIB:
                kind = <str>c
            back = PyFrame_GetBack(f)
            Py_XDECREF(<PyObject *>f)
            f = back
    except BaseException as e:  # never raise into the program
        _errors += 1
        last_error = repr(e)
        s = -1
    Py_XDECREF(<PyObject *>f)
    return s


cdef dict _callsite_at = {}      # (code address, lasti) -> (file, line) of a waiting call site


cdef object _user_callsite():
    """(file, line) of the first frame outside threading/queue/asyncio, or None (C frame walk, cached)."""
    cdef PyFrameObject *f = PyEval_GetFrame()
    cdef PyFrameObject *back
    cdef PyObject *cp
    out = None
    Py_XINCREF(<PyObject *>f)
    try:
        while f != NULL:
            cp = PyFrame_GetCode(f)
            code = <object>cp
            Py_XDECREF(cp)
            addr = <size_t>cp
            entry = _code_class.get(addr)
            c = (<tuple>entry)[0] if entry is not None else _classify(code, addr)
            if c is _USER:
                key = (addr, PyFrame_GetLasti(f))
                out = _callsite_at.get(key)
                if out is None:
                    out = (code.co_filename, PyFrame_GetLineNumber(f))
                    if len(_callsite_at) < MAX_CODES * 4 and addr in _code_class:
                        _callsite_at[key] = out
                break
            back = PyFrame_GetBack(f)
            Py_XDECREF(<PyObject *>f)
            f = back
    finally:
        Py_XDECREF(<PyObject *>f)
    return out


cdef void _record_wait(int s, int64_t t0, int64_t d) noexcept:
    """A blocking wait of d ns that started at t0 on site s: counted, with its thread and call site."""
    global _errors, last_error, _lost_threads, _lost_calls
    if s < 0 or not _active:
        return
    _cont[s] += 1
    _wait[s] += d
    if d > _wmax[s]:
        _wmax[s] = d
    try:
        tid = gy_native_id()
        per = _threads.get(s)
        if per is None:
            per = _threads[s] = {}
        rec = per.get(tid)
        if rec is not None:
            rec[0] += 1
            rec[1] += d
        elif len(per) < _MAX_THREADS:
            per[tid] = [1, d, t0]
        else:
            _lost_threads += 1
        ck = _user_callsite()
        if ck is None:
            return
        calls = _calls.get(s)
        if calls is None:
            calls = _calls[s] = {}
        rec = calls.get(ck)
        if rec is not None:
            rec[0] += 1
            rec[1] += d
        elif len(calls) < _MAX_CALLSITES:
            calls[ck] = [1, d]
        else:
            _lost_calls += 1
    except BaseException as e:
        _errors += 1
        last_error = repr(e)


cdef long long _timeout_us(object blocking, object timeout) except -2:
    """acquire()'s arguments as bare python checks them: -1 = forever, 0 = try, else microseconds."""
    cdef double t
    cdef bint b = blocking
    if timeout is None:
        raise TypeError("'NoneType' object cannot be interpreted as an integer or float")
    t = timeout
    if isnan(t):
        raise ValueError("Invalid value NaN (not a number)")
    if not b:
        if t != -1.0:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0
    if t == -1.0:
        return -1
    if t < 0:
        raise ValueError(_NEG_MSG)
    if t * 1e9 >= 9.223372036854775807e18:
        raise OverflowError("timestamp out of range for platform time_t")
    t = ceil(t * 1e6)
    if t > <double>PY_TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return <long long>t


_FOREVER = -1     # the default timeout object (small ints are singletons): identity is the fast check
_NEG_MSG = ("timeout value must be a non-negative number" if _sys.version_info >= (3, 13)
            else "timeout value must be positive")


cdef int _block(PyThread_type_lock lk, long long us, int site, int intr=1) except -1:
    """The slow path: wait (GIL released) for lk, at most `us` microseconds (-1: forever), running
    signal handlers on EINTR as CPython's acquire_timed does (intr=0: not interruptible, as
    RLock._acquire_restore in CPython). Times the wait. 1 acquired, 0 not."""
    cdef PyLockStatus r
    cdef int64_t t0 = _now()
    cdef int64_t deadline = t0 + us * 1000 if 0 < us < 1000000000000000 else 0
    cdef int64_t t1
    try:
        while True:
            with nogil:
                r = PyThread_acquire_lock_timed(lk, us, intr)
            if r != PY_LOCK_INTR:
                break
            Py_MakePendingCalls()        # raises what a signal handler raised (KeyboardInterrupt)
            if deadline:
                us = (deadline - _now()) // 1000
                if us <= 0:
                    r = PyThread_acquire_lock_timed(lk, 0, 0)
                    break
    finally:
        t1 = _now()
        _record_wait(site, t0, t1 - t0)
    return 1 if r == PY_LOCK_ACQUIRED else 0


@cython.final
@cython.auto_pickle(False)
cdef class lock:
    """A profiled `threading.Lock` (the semantics of `_thread.lock`)."""
    cdef PyThread_type_lock _lk
    cdef bint _locked
    cdef int _site
    cdef int64_t _t_acq
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"lock expected 0 arguments, got {len(args) + len(kwargs)}" if _sys.version_info >= (3, 13)
                            else f"_thread.allocate_lock() takes no arguments ({len(args) + len(kwargs)} given)")
        self._lk = PyThread_allocate_lock()
        if self._lk == NULL:
            raise MemoryError("can't allocate lock")
        self._site = _creation_site("lock")

    def __dealloc__(self):
        if self._lk != NULL:
            if self._locked:
                PyThread_release_lock(self._lk)
            PyThread_free_lock(self._lk)

    cdef inline bint _got(self):
        self._locked = True
        if self._site >= 0 and _active:
            _acq[self._site] += 1
            self._t_acq = _hold_clock()
        return True

    cdef bint _acquire(self, long long us) except -1:
        if PyThread_acquire_lock_timed(self._lk, 0, 0) == PY_LOCK_ACQUIRED:
            return self._got()
        if us == 0:
            return False
        if _block(self._lk, us, self._site):
            return self._got()
        return False

    def acquire(self, blocking=True, timeout=-1):
        """acquire(blocking=True, timeout=-1) -> bool, as _thread.lock.acquire."""
        if blocking is True and timeout is _FOREVER:    # the common call: no argument conversion
            return self._acquire(-1)
        return self._acquire(_timeout_us(blocking, timeout))

    def acquire_lock(self, blocking=True, timeout=-1):
        return self._acquire(_timeout_us(blocking, timeout))

    def __enter__(self):
        return self._acquire(-1)

    cdef int _release(self) except -1:
        if not self._locked:
            raise RuntimeError("release unlocked lock")
        self._locked = False
        if self._site >= 0 and _active and self._t_acq:
            _hold[self._site] += _hold_clock() - self._t_acq
        self._t_acq = 0
        PyThread_release_lock(self._lk)
        return 0

    def release(self):
        self._release()

    def release_lock(self):
        self._release()

    def __exit__(self, exc_type=None, exc=None, tb=None):   # no *args tuple per `with`
        self._release()

    def locked(self):
        return bool(self._locked)

    def locked_lock(self):
        return bool(self._locked)

    def _at_fork_reinit(self):
        # as CPython: a fresh lock (the old one may be held by a thread that no longer exists;
        # it is leaked, not freed)
        cdef PyThread_type_lock nl = PyThread_allocate_lock()
        if nl == NULL:
            raise MemoryError("can't allocate lock")
        self._lk = nl
        self._locked = False
        self._t_acq = 0

    def __repr__(self):
        return "<%s _thread.lock object at %s>" % ("locked" if self._locked else "unlocked", hex(id(self)))

    def __reduce__(self):
        raise TypeError("cannot pickle '_thread.lock' object")

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle '_thread.lock' object")


@cython.auto_pickle(False)
cdef class RLock:
    """A profiled reentrant lock (the semantics of `_thread.RLock`, which, unlike `_thread.lock`, can be
    subclassed)."""
    cdef PyThread_type_lock _lk
    cdef unsigned long _owner
    cdef unsigned long _count
    cdef int _site
    cdef int64_t _t_acq
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        self._lk = PyThread_allocate_lock()
        if self._lk == NULL:
            raise MemoryError("can't allocate lock")
        self._site = _rlock_site()

    def __dealloc__(self):
        if self._lk != NULL:
            if self._count:
                PyThread_release_lock(self._lk)
            PyThread_free_lock(self._lk)

    cdef bint _acquire(self, long long us) except -1:
        cdef unsigned long tid = PyThread_get_thread_ident()
        if self._count > 0 and self._owner == tid:
            if self._count == <unsigned long>-1:
                raise OverflowError("Internal lock count overflowed")
            self._count += 1
            return True
        if PyThread_acquire_lock_timed(self._lk, 0, 0) != PY_LOCK_ACQUIRED:
            if us == 0 or not _block(self._lk, us, self._site):
                return False
        self._owner = tid
        self._count = 1
        if self._site >= 0 and _active:
            _acq[self._site] += 1
            self._t_acq = _hold_clock()
        return True

    def acquire(self, blocking=True, timeout=-1):
        """acquire(blocking=True, timeout=-1) -> bool, as _thread.RLock.acquire."""
        if blocking is True and timeout is _FOREVER:    # the common call: no argument conversion
            return self._acquire(-1)
        return self._acquire(_timeout_us(blocking, timeout))

    def __enter__(self):
        return self._acquire(-1)

    cdef inline void _unlock(self) noexcept:
        self._owner = 0
        if self._site >= 0 and _active and self._t_acq:
            _hold[self._site] += _hold_clock() - self._t_acq
        self._t_acq = 0
        PyThread_release_lock(self._lk)

    cdef int _release(self) except -1:
        cdef unsigned long tid = PyThread_get_thread_ident()
        if self._count == 0 or self._owner != tid:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._unlock()
        return 0

    def release(self):
        self._release()

    def __exit__(self, exc_type=None, exc=None, tb=None):   # no *args tuple per `with`
        self._release()

    def _is_owned(self):
        return self._count > 0 and self._owner == PyThread_get_thread_ident()

    def _recursion_count(self):
        return self._count if self._owner == PyThread_get_thread_ident() else 0

    def _release_save(self):
        if self._count == 0:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._unlock()
        return state

    def _acquire_restore(self, state):
        cdef unsigned long count, owner
        count, owner = state
        if PyThread_acquire_lock_timed(self._lk, 0, 0) != PY_LOCK_ACQUIRED:
            _block(self._lk, -1, self._site, 0)   # never interrupted: Condition.wait's finally relies on it
        self._owner = owner
        self._count = count
        if self._site >= 0 and _active:
            _acq[self._site] += 1
            self._t_acq = _hold_clock()

    def _at_fork_reinit(self):
        cdef PyThread_type_lock nl = PyThread_allocate_lock()
        if nl == NULL:
            raise MemoryError("can't allocate lock")
        self._lk = nl
        self._owner = 0
        self._count = 0
        self._t_acq = 0

    def __repr__(self):
        return "<%s %s object owner=%d count=%d at %s>" % (
            "locked" if self._count else "unlocked", "_thread.RLock" if type(self) is RLock else type(self).__name__,
            self._owner, self._count, hex(id(self)))

    def __reduce__(self):
        raise TypeError("cannot pickle '_thread.RLock' object")

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle '_thread.RLock' object")


# ---- threading.Condition and asyncio: subclasses made when the module is there ----------------

# A site handed by a Condition being created to the RLock its base __init__ creates, in the same
# thread (Python code runs in between: another thread may create locks meanwhile). Saves a stack
# walk that materialises two frame objects per Condition (concurrent.futures makes one per Future).
cdef int _handed_site = -2
cdef unsigned long _handed_tid = 0


cdef void _hand_over(int site):
    global _handed_site, _handed_tid
    _handed_site = site
    _handed_tid = PyThread_get_thread_ident()


cdef inline int _rlock_site():
    global _handed_site
    cdef int s
    if _handed_site != -2 and _handed_tid == PyThread_get_thread_ident():
        s = _handed_site
        _handed_site = -2
        return s
    return _creation_site("rlock")


def _make_condition(base, raw_allocate_lock):
    """threading.Condition with a site and a timed wait (the body of wait() is CPython 3.12/3.13's)."""

    class Condition(base):
        def __init__(self, lock=None):
            cdef int site = _creation_site("condition")
            if lock is None:    # base.__init__ makes an RLock at the same site: hand it over (no second walk)
                _hand_over(site)
                try:
                    base.__init__(self, lock)
                finally:
                    _hand_over(-2)
            else:
                base.__init__(self, lock)
            self._gy_site = site

        def wait(self, timeout=None):
            cdef int64_t t0
            if not self._is_owned():
                raise RuntimeError("cannot wait on un-acquired lock")
            waiter = raw_allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
            saved_state = self._release_save()
            gotit = False
            try:    # restore state no matter what (e.g., KeyboardInterrupt)
                t0 = _now()
                try:
                    if timeout is None:
                        waiter.acquire()
                        gotit = True
                    else:
                        if timeout > 0:
                            gotit = waiter.acquire(True, timeout)
                        else:
                            gotit = waiter.acquire(False)
                finally:
                    if timeout is None or timeout > 0:
                        _record_wait(self._gy_site, t0, _now() - t0)
                return gotit
            finally:
                self._acquire_restore(saved_state)
                if not gotit:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        pass

    Condition.__module__ = base.__module__
    Condition.__qualname__ = base.__qualname__
    Condition.__doc__ = base.__doc__
    return Condition


def _make_asyncio(mod):
    """Subclasses of asyncio.locks' classes whose blocking awaits are timed (a fast check first:
    nothing is timed when the call will not wait)."""
    out = {}
    for name, kind, meth in (("Lock", "asyncio.lock", "acquire"), ("Semaphore", "asyncio.semaphore", "acquire"),
                             ("BoundedSemaphore", "asyncio.bounded_semaphore", "acquire"),
                             ("Condition", "asyncio.condition", "wait"), ("Event", "asyncio.event", "wait")):
        base = getattr(mod, name, None)
        if base is None:
            continue
        out[name] = _asyncio_subclass(base, kind, meth)
    return out


def _asyncio_subclass(base, str kind, str meth):
    orig = getattr(base, meth)

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        self._gy_site = _creation_site(kind)

    if meth == "acquire":
        async def acquire(self):
            cdef int64_t t0
            if not self.locked():
                return await orig(self)
            t0 = _now()
            try:
                return await orig(self)
            finally:
                _record_wait(getattr(self, "_gy_site", -1), t0, _now() - t0)
        ns = {"__init__": __init__, "acquire": acquire}
    elif kind == "asyncio.event":
        async def wait(self):
            cdef int64_t t0
            if self.is_set():
                return await orig(self)
            t0 = _now()
            try:
                return await orig(self)
            finally:
                _record_wait(getattr(self, "_gy_site", -1), t0, _now() - t0)
        ns = {"__init__": __init__, "wait": wait}
    else:
        async def wait(self):
            cdef int64_t t0 = _now()
            try:
                return await orig(self)
            finally:
                _record_wait(getattr(self, "_gy_site", -1), t0, _now() - t0)
        ns = {"__init__": __init__, "wait": wait}
    ns["__module__"] = base.__module__
    ns["__qualname__"] = base.__qualname__
    ns["__doc__"] = base.__doc__
    return type(base.__name__, (base,), ns)


# ---- patching -----------------------------------------------------------------------------

cdef dict _saved = {}          # (module name, attribute) -> original value
cdef bint _threading_done = False
cdef bint _asyncio_done = False


cdef void _set(mod, str attr, value):
    key = (mod.__name__, attr)
    if key not in _saved:
        _saved[key] = getattr(mod, attr)
    setattr(mod, attr, value)


cdef str _threading_state = "waiting for import"
cdef str _asyncio_state = "waiting for import"


cdef str _foreign(obj):
    """The module of a green-thread library (gevent, eventlet) that replaced this object, else ''."""
    m = getattr(obj, "__module__", None) or ""
    if m.startswith(("gevent", "eventlet")):
        return m
    return ""


cdef void _patch_threading(mod) except *:
    global _threading_done, _threading_state
    if _threading_done:
        return
    # gevent / eventlet monkey-patching: their locks yield to a hub; ours would block it. Leave them.
    for obj in (getattr(mod, "Lock", None), getattr(mod, "_allocate_lock", None), getattr(mod, "_CRLock", None)):
        if _foreign(obj):
            _threading_state = f"not patched: threading is monkey-patched by {_foreign(obj)}"
            _threading_done = True
            return
    _set(mod, "Lock", lock)
    if getattr(mod, "_CRLock", None) is not None:
        _set(mod, "_CRLock", RLock)
    base = _saved.get(("threading", "Condition"), mod.Condition)
    _set(mod, "Condition", _make_condition(base, mod._allocate_lock))
    _threading_done = True
    _threading_state = "patched"


cdef void _patch_asyncio(mod) except *:
    global _asyncio_done, _asyncio_state
    if _asyncio_done:
        return
    for name, cls in _make_asyncio(mod).items():
        _set(mod, name, cls)
    # asyncio/__init__ re-exports with `from .locks import *`: when asyncio is already there, patch it too
    pkg = _sys.modules.get("asyncio")
    if pkg is not None and getattr(pkg, "locks", None) is mod:
        for name in ("Lock", "Semaphore", "BoundedSemaphore", "Condition", "Event"):
            if getattr(pkg, name, None) is _saved.get(("asyncio.locks", name)):
                _set(pkg, name, getattr(mod, name))
    _asyncio_done = True
    _asyncio_state = "patched"


cdef void _patch(str name, mod) noexcept:
    global _errors, last_error
    try:
        if name == "threading":
            _patch_threading(mod)
        elif name == "asyncio.locks":
            _patch_asyncio(mod)
    except BaseException as e:
        _errors += 1
        last_error = repr(e)
    if _threading_done and _asyncio_done:
        _unhook()


@cython.auto_pickle(False)
cdef class _PatchingLoader:
    """Wraps the real loader of a watched module: patch it right after it is executed, then give the
    module its real loader back (so the program sees the loader it would see)."""
    cdef object inner
    cdef str name

    def __init__(self, inner, name):
        self.inner = inner
        self.name = name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        try:
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self.inner
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self.inner
        except BaseException:
            pass
        if _active:
            _patch(self.name, module)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


@cython.auto_pickle(False)
cdef class _Finder:
    """At the head of sys.meta_path until threading and asyncio.locks are patched: returns None for
    every other module (one call per first import)."""
    cdef bint busy

    def find_spec(self, fullname, path=None, target=None):
        if self.busy or not _active or (fullname != "threading" and fullname != "asyncio.locks"):
            return None
        self.busy = True
        try:
            for finder in _sys.meta_path:
                if finder is self:
                    continue
                fs = getattr(finder, "find_spec", None)
                if fs is None:
                    continue
                spec = fs(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _PatchingLoader(spec.loader, fullname)
                    return spec
            return None
        except BaseException:
            return None
        finally:
            self.busy = False

    def invalidate_caches(self):
        pass


cdef object _finder = None


cdef void _unhook():
    global _finder
    if _finder is not None:
        try:
            _sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None


def _after_fork_in_child():
    """The child's counters start at zero; every site is announced again by sites()."""
    cdef int s
    gy_native_id_reset()
    for s in range(_n_sites):
        _acq[s] = 0
        _cont[s] = 0
        _wait[s] = 0
        _wmax[s] = 0
        _hold[s] = 0
    _threads.clear()
    _calls.clear()
    _new_sites[:] = _all_sites


cdef bint _fork_hooked = False


def install() -> None:
    """From now on, synchronisation objects the program creates are profiled (see the module
    docstring). Idempotent; never raises."""
    global _active, _finder, _fork_hooked, _errors, last_error, _use_tsc, _anchor_ns, _anchor_ticks
    try:
        if not _active and _anchor_ns == 0:
            _use_tsc = _tsc_usable()
            _anchor_ns = _now()
            _anchor_ticks = <int64_t>gy_ticks()
        _active = True
        mod = _sys.modules.get("threading")
        if mod is not None:
            _patch("threading", mod)
        mod = _sys.modules.get("asyncio.locks")
        if mod is not None:
            _patch("asyncio.locks", mod)
        if not (_threading_done and _asyncio_done) and _finder is None:
            _finder = _Finder()
            _sys.meta_path.insert(0, _finder)
        if not _fork_hooked:
            _os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hooked = True
    except BaseException as e:
        _errors += 1
        last_error = repr(e)


def uninstall() -> None:
    """Give threading / asyncio their own classes back and stop recording. Objects made while
    installed keep working as plain locks (they stop counting). Never raises."""
    global _active, _threading_done, _asyncio_done, _errors, last_error, _threading_state, _asyncio_state
    _active = False
    try:
        _unhook()
        ours = {}
        for (modname, attr), value in list(_saved.items()):
            mod = _sys.modules.get(modname)
            if mod is not None:
                ours[id(getattr(mod, attr, None))] = value
                setattr(mod, attr, value)
        pkg = _sys.modules.get("asyncio")    # `from .locks import *` copied ours into asyncio
        if pkg is not None:
            for name in ("Lock", "Semaphore", "BoundedSemaphore", "Condition", "Event"):
                value = ours.get(id(getattr(pkg, name, None)))
                if value is not None:
                    setattr(pkg, name, value)
        _saved.clear()
        _threading_done = False
        _asyncio_done = False
        _threading_state = _asyncio_state = "waiting for import"
    except BaseException as e:
        _errors += 1
        last_error = repr(e)


def installed() -> bool:
    return _active


def status() -> dict:
    """{"threading": ..., "asyncio.locks": ...}: "patched", "waiting for import", "not installed" or
    "not patched: <why>" (e.g. gevent's monkey-patching)."""
    if not _active:
        return {"threading": "not installed", "asyncio.locks": "not installed"}
    return {"threading": _threading_state, "asyncio.locks": _asyncio_state}


def sites() -> list:
    """[(site_id, kind, file, line, function)] for the sites created since the previous call."""
    out = list(_new_sites)
    del _new_sites[:]
    return out


def drain() -> list:
    """Per site touched since the previous drain: (site_id, acquires, contended, wait_ns,
    wait_max_ns, hold_ns, threads, callsites); see the module docstring. Resets those counters.
    Runs under the GIL without releasing it, so it is atomic with respect to the locks' updates."""
    cdef int s
    cdef int64_t hold
    out = []
    _calibrate()
    for s in range(_n_sites):
        if _acq[s] == 0 and _cont[s] == 0 and _hold[s] == 0:
            continue
        per = _threads.pop(s, None)
        threads = tuple((tid, r[0], r[1], r[2]) for tid, r in per.items()) if per else ()
        calls = _calls.pop(s, None)
        callsites = tuple((k[0], k[1], r[0], r[1]) for k, r in calls.items()) if calls else ()
        hold = <int64_t>(_hold[s] * _ns_per_unit) if _hold[s] > 0 else 0
        out.append((s, _acq[s], _cont[s], _wait[s], _wmax[s], hold, threads, callsites))
        _acq[s] = 0
        _cont[s] = 0
        _wait[s] = 0
        _wmax[s] = 0
        _hold[s] = 0
    return out


def counters() -> tuple:
    """(sites, dropped_sites, errors, lost_threads, lost_callsites, last_error)."""
    return (_n_sites, _dropped_sites, _errors, _lost_threads, _lost_calls, last_error)


def window():
    """What the profiler saw in one window, as the bridge ships it (None when nothing happened).
    The bridge calls it from its shipper thread; compiled, it runs no bytecode, so the program's
    own sys.monitoring tools (coverage's, a profiler's) never see it."""
    new_sites, rows = sites(), drain()
    if not new_sites and not rows:
        return None
    return ("locks", new_sites, rows, counters())
