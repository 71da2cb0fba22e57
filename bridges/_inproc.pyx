# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The in-process bridge of `gyroscope run`: the only gyroscope code that runs inside the program.

Started by the bootstrap (bridges/boot/sitecustomize.py) before the program's first line. It
imports nothing python does not load at start-up but the builtins gc and atexit, starts no
`threading.Thread` (so `threading.enumerate()`, `active_count()` and joins see only the
program's threads), never raises into the program, and keeps no thread alive across fork().

What it does
- sys.monitoring (PEP 669) callbacks, module-level functions: PY_START decides once per code
  object whether it is the program's own code (bridges/owncode.py, shipped as a string) and
  arms the local events JUMP | PY_RETURN | PY_RESUME | PY_YIELD on it; it always returns
  DISABLE. Each location is counted K + skip times per window (K=320 under `gyroscope run`, skip
  drawn per window in 0..255; a loop that already ran free for >= 0.2 ms in a window, its rate
  then measured there, SHORT_K=8 times: see _draw), then DISABLEd; the gaps between its last K - WARM hits (WARM=256),
  each from the return of one callback to the start of the next (so the callback's own work is
  not in them), give the rate of a loop with no range iterator to read (see "spans" below for
  the others): the median of their four quarters' means (a quarter with a
  preemption in it is left out), less the dispatch cost the process measured on itself
  (_calibrate_here, once, ~1-2 ms at its first window). WARM is past the small-int cache on
  purpose: the first 256 iterations of a `for i in range(n)` loop make no new ints and run ~40%
  faster than the rest (a loop called often, timed from its first iteration, was reported ~2x
  too fast); the random skip puts the timed hits at a random depth (a loop entered right after a
  syscall runs its first few hundred iterations ~15% slower). Slots: one per (code object, location, kind); at most
  MAX_SLOTS, beyond that counted in `dropped`.
- Re-arming only our own tool: `restart_events()` would re-enable DISABLEd events of every tool,
  so for each code with a disabled location we set its local events to 0 and back, which
  re-instruments that code for our tool only.
- gc pauses through gc.callbacks (one entry in that list is the only trace the program can see).
- The shipper: a native thread (pthread, not threading) that wakes once per window, takes the
  GIL for the drain and the re-arm (microseconds), releases it and sends one binary frame over a
  Unix socket to the gyroscope process. Before fork it is stopped and joined (so os.fork() sees
  the program's threads only and warns exactly when python would); after fork it restarts in
  the parent, and in the child (a new process of the session) it reconnects when subprocesses
  are followed, else the child's bridge goes quiet.
- At normal exit an atexit callback (registered first, so it runs after the program's own)
  ships the last window with the GIL, the lock profiler's included; after finalisation,
  Py_AtExit ships what finalisation itself counted, from C data only. After os._exit, SIGKILL or
  a crash, what was shipped is what the session has: everything up to the last window.

Wire format (native byte order; the reader is on the same machine): frames of
`u32 length (bytes after this field), u8 type, payload`:
- HELLO 1: i64 pid, i64 ppid, i64 monotonic ns, u8 forked, then "version\\0executable\\0"
- SLOTS 2: records of u32 slot, u32 kind, i32 first_line, i32 line, i32 dest_line,
  u32 len_file, u32 len_qualname, file, qualname (UTF-8)
- WINDOW 3 / FINAL 4: i64 t_ns, u64 raw callbacks, u64 dropped, u64 callback errors,
  u32 n_hits, u32 n_threads, then n_hits x (u32 slot, u32 hits, i64 t_first, i64 span,
  u64 thread ident, u64 second thread ident, u64 iter_read, u64 free_iters, i64 free_ns, u64
  flags (bit 0: the window's count may be incomplete; bit 1: a stepping local, not an iterator,
  counted part of it: see "induction"; bit 2: a forked child's loop that began disarmed, as its
  parent left it: its hits missed what ran before the re-arm, even in a window that did not
  saturate; bit 3: the slot saturated, its last hit DISABLEd it: hits is a lower bound, whether
  or not any gap was timed: a SHORT_K burst times none), i64 others (the other callbacks inside
  the timed gaps, scaled as span is); a slot with no hits but iterator readings or a flag has
  hits 0; see "spans" and "coverage"), n_threads x (u64 ident, u64 native id),
  3 x (i64 collections, i64 total pause ns, i64 longest ns, i64 first start ns) for gc
  generations 0-2, then the coroutine steps (see _build_steps), then f64 near and f64 far: this
  process's dispatch cost of a callback (see calibrate; 0.0 until measured). span, when the slot
  saturated (else 0): (hits - WARM) x the median quarter's mean gap between its timed hits (one
  frame's consecutive hits), so that span / (hits - WARM) is the time from one callback's
  return to the next one's start, less the durations of the other callbacks in between.
- EXTRA 5: a marshal'd object from another in-process part (e.g. the lock profiler).
The other way, gyroscope -> program, on the same connection:
- LIVE 16: the live decisions, a marshal'd list of dicts; read by the shipper after each window
  (non-blocking) and decoded on demand by `live_decisions()` (gyroscope.schedulers.live).
"""
from cpython.object cimport PyObject, Py_SIZE
from cpython.weakref cimport PyWeakref_NewRef
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.types cimport clockid_t

import gc as _gc
import marshal as _marshal
import os as _os
import sys as _sys


cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident()
    int Py_AtExit(void (*func)() noexcept nogil)
    int Py_IsInitialized() nogil
    int Py_AddPendingCall(int (*func)(void*) noexcept, void* arg)
    ctypedef struct PyCodeObject:
        pass
    int PyCode_Addr2Line(PyCodeObject* code, int offset)
    ctypedef struct PyInterpreterState:
        pass
    ctypedef struct PyThreadState:
        unsigned long thread_id
        unsigned long native_thread_id
    PyInterpreterState* PyInterpreterState_Get()
    PyThreadState* PyInterpreterState_ThreadHead(PyInterpreterState*)
    PyThreadState* PyThreadState_Next(PyThreadState*)


cdef extern from "<sched.h>" nogil:
    int sched_yield()
    ctypedef struct cpu_set_t:
        pass
    int sched_getcpu()
    int sched_getaffinity(int, size_t, cpu_set_t*)
    int sched_setaffinity(int, size_t, const cpu_set_t*)
    void CPU_ZERO(cpu_set_t*)
    void CPU_SET(int, cpu_set_t*)


cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    ctypedef struct pthread_attr_t:
        pass
    int pthread_create(pthread_t*, const pthread_attr_t*, void* (*)(void*) noexcept nogil, void*)
    int pthread_attr_init(pthread_attr_t*)
    int pthread_attr_destroy(pthread_attr_t*)
    int pthread_attr_setaffinity_np(pthread_attr_t*, size_t, const cpu_set_t*)
    int pthread_join(pthread_t, void**)
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_trylock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)
    int pthread_condattr_init(pthread_condattr_t*)
    int pthread_condattr_setclock(pthread_condattr_t*, int)
    int pthread_cond_init(pthread_cond_t*, pthread_condattr_t*)
    int pthread_cond_timedwait(pthread_cond_t*, pthread_mutex_t*, timespec*)
    int pthread_cond_signal(pthread_cond_t*)


cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    int sigfillset(sigset_t*)
    int pthread_sigmask(int, const sigset_t*, sigset_t*)
    int SIG_SETMASK


cdef extern from "<sys/socket.h>" nogil:
    int socket(int, int, int)
    int connect(int, void*, unsigned int)
    long send(int, void*, size_t, int)
    long recv(int, void*, size_t, int)
    int MSG_DONTWAIT
    int AF_UNIX
    int SOCK_STREAM
    int SOCK_CLOEXEC
    int MSG_NOSIGNAL
    int setsockopt(int, int, int, const void*, unsigned int)
    int SOL_SOCKET
    int SO_SNDTIMEO


cdef extern from "<sys/time.h>" nogil:
    struct timeval:
        long tv_sec
        long tv_usec


cdef extern from "<sys/stat.h>" nogil:
    struct stat:
        unsigned long st_dev
        unsigned long st_ino
        unsigned int st_mode
    int fstat(int, stat*)
    bint S_ISSOCK(unsigned int)


cdef extern from "<sys/resource.h>" nogil:
    struct rlimit:
        unsigned long rlim_cur
        unsigned long rlim_max
    int getrlimit(int, rlimit*)
    int RLIMIT_NOFILE


cdef extern from "<fcntl.h>" nogil:
    int fcntl(int, int, ...)
    int F_DUPFD_CLOEXEC
    int open(const char*, int)
    int O_RDONLY
    int O_CLOEXEC


cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]


cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)
    int PR_SET_PTRACER
    int PR_SET_NAME


cdef extern from "<unistd.h>" nogil:
    int access(const char*, int)
    int F_OK
    int usleep(unsigned int)
    int close(int)
    long read(int, void*, size_t)
    int getpid()
    int getppid()


cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long, ...)
    long SYS_gettid


cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR


# The loop's iterator, read where CPython keeps it (3.12 and 3.13, with the GIL; elsewhere the
# spans are off and every count beyond the hits is estimated, as before). See "Spans" below.
cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
    #define GYRO_FRAMES 1
    #include "opcode.h"
    /* the head of CPython's _PyInterpreterFrame (Include/internal/pycore_frame.h): the same
       offsets in 3.12 (f_code, prev_instr) and 3.13 (f_executable, instr_ptr) */
    typedef struct { PyObject *f_executable; void *previous; PyObject *f_funcobj; PyObject *f_globals;
        PyObject *f_builtins; PyObject *f_locals; PyObject *frame_obj; uint16_t *instr_ptr;
        int stacktop; uint16_t return_offset; char owner; PyObject *localsplus[1]; } gyro_iframe;
    /* _PyRangeIterObject (Include/internal/pycore_range.h) */
    typedef struct { PyObject_HEAD long start; long step; long len; } gyro_rangeiter;
    static PyTypeObject *gyro_t_range = NULL;
    static void *gyro_frame_of(PyThreadState *ts) {
    #if PY_VERSION_HEX >= 0x030D0000
        return (void *)ts->current_frame;
    #else
        return ts->cframe ? (void *)ts->cframe->current_frame : NULL;
    #endif
    }
    #else
    #define GYRO_FRAMES 0
    typedef struct { int unused; } gyro_iframe;
    static PyTypeObject *gyro_t_range = NULL;
    static void *gyro_frame_of(PyThreadState *ts) { (void)ts; return NULL; }
    #endif

    static int gyro_frames_init(PyObject *r) {
        if (!GYRO_FRAMES || !PyType_Check(r)) return 0;
        gyro_t_range = (PyTypeObject *)r;
        Py_INCREF(r);
        return 1;
    }

    /* The iterators the bridge reads, laid out as in Objects/listobject.c, tupleobject.c,
       dictobject.c (dictiterobject) and enumobject.c: the same in 3.12 and 3.13. */
    typedef struct { PyObject_HEAD Py_ssize_t it_index; PyObject *it_seq; } gyro_seqiter;
    typedef struct { PyObject_HEAD PyObject *di_dict; Py_ssize_t di_used; Py_ssize_t di_pos;
        PyObject *di_result; Py_ssize_t len; } gyro_dictiter;
    typedef struct { PyObject_HEAD Py_ssize_t en_index; PyObject *en_sit; PyObject *en_result; } gyro_enum;
    enum { GYRO_NONE = 0, GYRO_RANGE, GYRO_SEQ, GYRO_DICT, GYRO_ENUM };

    static int gyro_kind(PyObject *o) {
    #if GYRO_FRAMES
        PyTypeObject *t = Py_TYPE(o);
        if (t == gyro_t_range) return GYRO_RANGE;
        if (t == &PyListIter_Type || t == &PyTupleIter_Type) return GYRO_SEQ;
        if (t == &PyDictIterKey_Type || t == &PyDictIterValue_Type || t == &PyDictIterItem_Type) return GYRO_DICT;
        if (t == &PyEnum_Type) return GYRO_ENUM;
    #endif
        (void)o; return GYRO_NONE;
    }

    /* The list, tuple or dict a loop's iterator holds until it is exhausted (through an
       enumerate), else NULL. */
    static PyObject *gyro_held(PyObject *o) {
        switch (gyro_kind(o)) {
        case GYRO_SEQ: return ((gyro_seqiter *)o)->it_seq;
        case GYRO_DICT: return ((gyro_dictiter *)o)->di_dict;
        case GYRO_ENUM: {
            PyObject *in = ((gyro_enum *)o)->en_sit;
            return in != NULL && gyro_kind(in) != GYRO_ENUM ? gyro_held(in) : NULL;
        }
        }
        return NULL;
    }

    /* Only the loop's iterator holds its list, tuple or dict now (see "spans"). */
    static int gyro_alone(PyObject *o) {
        PyObject *c = gyro_held(o);
        return c != NULL && Py_REFCNT(c) == 1;
    }

    /* The iterator of the for-loop whose backward jump is running in frame fp (the top of its
       value stack), if the bridge can read it: a range, list, tuple or dict iterator, or an
       enumerate over one; else NULL (borrowed). A list, tuple or dict only the loop holds
       (`for x in sorted(a)`) is not taken (gyro_alone): after a `break`, holding its iterator
       would keep it alive, and the program would see its items' finalizers run later than under
       python. Nor is an enumerate over anything else (a generator's `finally` would run late). */
    static PyObject *gyro_loop_iter(void *fp) {
    #if GYRO_FRAMES
        gyro_iframe *f = (gyro_iframe *)fp;
        if (f == NULL || f->f_executable == NULL || !PyCode_Check(f->f_executable)) return NULL;
        PyCodeObject *co = (PyCodeObject *)f->f_executable;
        if (f->stacktop <= co->co_nlocalsplus || f->stacktop > co->co_nlocalsplus + co->co_stacksize) return NULL;
        PyObject *o = f->localsplus[f->stacktop - 1];
        if (o == NULL) return NULL;
        int k = gyro_kind(o);
        if (k == GYRO_ENUM) {
            PyObject *in = ((gyro_enum *)o)->en_sit;
            int ki = in != NULL ? gyro_kind(in) : GYRO_NONE;
            return ki == GYRO_RANGE || ki == GYRO_SEQ || ki == GYRO_DICT ? o : NULL;
        }
        return k != GYRO_NONE ? o : NULL;
    #else
        (void)fp; return NULL;
    #endif
    }

    /* The value of local i of live frame fp when it is an int that fits in 64 bits (1), else 0. */
    static int gyro_local_int(void *fp, int i, int64_t *v) {
    #if GYRO_FRAMES
        gyro_iframe *f = (gyro_iframe *)fp;
        if (f->f_executable == NULL || !PyCode_Check(f->f_executable) || i < 0
                || i >= ((PyCodeObject *)f->f_executable)->co_nlocals) return 0;
        PyObject *o = f->localsplus[i];
        if (o == NULL || !PyLong_CheckExact(o)) return 0;
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
        *v = (int64_t)x;
        return 1;
    #else
        (void)fp; (void)i; (void)v; return 0;
    #endif
    }

    /* The number of (fast) locals of frame fp's code (0 when unknown). */
    static int gyro_n_locals(void *fp) {
    #if GYRO_FRAMES
        gyro_iframe *f = (gyro_iframe *)fp;
        if (f == NULL || f->f_executable == NULL || !PyCode_Check(f->f_executable)) return 0;
        return ((PyCodeObject *)f->f_executable)->co_nlocals;
    #else
        (void)fp; return 0;
    #endif
    }

    /* Where the loop's iterator sits on frame fp's value stack (at a backward jump: its top). */
    static int gyro_stack_depth(void *fp) {
    #if GYRO_FRAMES
        return ((gyro_iframe *)fp)->stacktop - 1;
    #else
        (void)fp; return -1;
    #endif
    }

    /* Does frame fp (alive: the caller knows) run `code`, paused at a byte offset in lo..hi, with
       `it` at `depth` of its value stack? (A loop keeps its iterator there while it runs.) */
    static int gyro_frame_in_loop(void *fp, PyObject *code, int lo, int hi, int depth, PyObject *it) {
    #if GYRO_FRAMES
        gyro_iframe *f = (gyro_iframe *)fp;
        if (f->f_executable != code || !PyCode_Check(code) || f->instr_ptr == NULL || depth < 0) return 0;
        long off = (long)((char *)f->instr_ptr - ((PyCodeObject *)code)->co_code_adaptive);
        return off >= lo && off <= hi && f->localsplus[depth] == it;
    #else
        (void)fp; (void)code; (void)lo; (void)hi; (void)depth; (void)it; return 0;
    #endif
    }

    /* How far the iterator has gone (grows by one per item taken); *done: it handed out its last
       item; *len: a list or tuple iterator's sequence length now, -1 when it let go of its
       sequence (exhausted: its position is lost in 3.13; see "spans") or is another kind. */
    static int64_t gyro_iter_pos(PyObject *o, int *done, int64_t *len) {
        *len = -1;
        *done = 0;
    #if GYRO_FRAMES
        switch (gyro_kind(o)) {
        case GYRO_RANGE: {
            long n = ((gyro_rangeiter *)o)->len;
            *done = n <= 0;
            return -(int64_t)n;
        }
        case GYRO_SEQ: {
            gyro_seqiter *it = (gyro_seqiter *)o;
            if (it->it_seq == NULL || it->it_index < 0) { *done = 1; return 0; }
            *len = Py_SIZE(it->it_seq);
            *done = it->it_index >= *len;
            return it->it_index;
        }
        case GYRO_DICT: {      /* len: the items still to come (0 once exhausted) */
            gyro_dictiter *d = (gyro_dictiter *)o;
            *done = d->di_dict == NULL || d->len <= 0;
            return -(int64_t)d->len;
        }
        case GYRO_ENUM: {      /* en_index: the items taken */
            gyro_enum *e = (gyro_enum *)o;
            int64_t inner_len;
            if (e->en_sit != NULL) gyro_iter_pos(e->en_sit, done, &inner_len);
            return e->en_index;
        }
        }
    #endif
        (void)o; *done = 1; return 0;
    }

    /* Would a (result) tuple's last reference free an item that may run code when freed? */
    static int gyro_result_frees(PyObject *t) {
        if (t == NULL || Py_REFCNT(t) != 1 || !PyTuple_CheckExact(t)) return 0;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
            PyObject *x = PyTuple_GET_ITEM(t, i);
            if (x != NULL && Py_REFCNT(x) == 1 && !PyLong_CheckExact(x) && !PyUnicode_CheckExact(x)
                    && !PyFloat_CheckExact(x)) return 1;
        }
        return 0;
    }

    /* Would dropping this (last) reference to a loop's iterator free an object that may run code
       (its list, tuple or dict, or the last item a dict or enumerate iterator keeps)? */
    static int gyro_frees(PyObject *o) {
        if (Py_REFCNT(o) != 1) return 0;
        switch (gyro_kind(o)) {
        case GYRO_SEQ:
            return gyro_alone(o);
        case GYRO_DICT:
            return gyro_alone(o) || gyro_result_frees(((gyro_dictiter *)o)->di_result);
        case GYRO_ENUM: {
            gyro_enum *e = (gyro_enum *)o;
            return (e->en_sit != NULL && gyro_frees(e->en_sit)) || gyro_result_frees(e->en_result);
        }
        }
        return 0;
    }

    /* Is the thread state still one of the interpreter's (a thread that ended is not)? */
    static int gyro_ts_alive(PyThreadState *ts) {
        PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
        for (; t != NULL; t = PyThreadState_Next(t)) if (t == ts) return 1;
        return 0;
    }

    /* The bytecode offset frame fp of thread ts is executing (or paused at): -1 when fp is not on
       that thread's stack (it returned), -2 when it is but its offset is unknown. */
    static int gyro_frame_offset(PyThreadState *ts, void *fp) {
    #if GYRO_FRAMES
        gyro_iframe *f = (gyro_iframe *)gyro_frame_of(ts);
        for (int depth = 0; f != NULL && depth < 100000; depth++, f = (gyro_iframe *)f->previous) {
            if ((void *)f != fp) continue;
            if (f->f_executable == NULL || !PyCode_Check(f->f_executable) || f->instr_ptr == NULL) return -2;
            return (int)((char *)f->instr_ptr - ((PyCodeObject *)f->f_executable)->co_code_adaptive);
        }
    #else
        (void)ts; (void)fp;
    #endif
        return -1;
    }

    /* Where the for-loop whose backward jumps target `head` ends: the offset its exhausted
       iterator jumps to, past its FOR_ITER (after any EXTENDED_ARG), its cache entry and oparg
       code units (its body and every backward jump lie before it; an if/else may place one after
       the loop's main jump). -1 when the target is not a FOR_ITER: a while loop's test (the
       range iterator on top of the stack is then an enclosing loop's), or another tool's
       instrumentation there. */
    static int gyro_loop_end(PyObject *code, int head) {
    #if GYRO_FRAMES
        if (!PyCode_Check(code)) return -1;
        const uint8_t *b = (const uint8_t *)((PyCodeObject *)code)->co_code_adaptive;
        Py_ssize_t n = 2 * Py_SIZE(code);
        Py_ssize_t i = head;
        int arg = 0;
        while (i >= 0 && i + 1 < n && b[i] == EXTENDED_ARG) { arg = (arg | b[i + 1]) << 8; i += 2; }
        if (i < 0 || i + 1 >= n) return -1;
        if (b[i] != FOR_ITER && b[i] != FOR_ITER_RANGE && b[i] != FOR_ITER_LIST && b[i] != FOR_ITER_TUPLE
                && b[i] != FOR_ITER_GEN && b[i] != INSTRUMENTED_FOR_ITER) return -1;
        Py_ssize_t end = i + 4 + 2 * (Py_ssize_t)(arg | b[i + 1]);
        return end < n ? (int)end : 0;     /* 0: a for-loop whose end is out of reach */
    #else
        (void)code; (void)head;
        return -1;
    #endif
    }
    """
    int GYRO_FRAMES
    int gyro_frames_init(object r)
    void* gyro_frame_of(PyThreadState* ts) nogil
    PyObject* gyro_loop_iter(void* fp) nogil
    int64_t gyro_iter_pos(PyObject* o, int* done, int64_t* len) nogil
    int gyro_kind(PyObject* o) nogil
    int gyro_stack_depth(void* fp) nogil
    int gyro_local_int(void* fp, int i, int64_t* v)
    int gyro_n_locals(void* fp) nogil
    int gyro_frame_in_loop(void* fp, PyObject* code, int lo, int hi, int depth, PyObject* it) nogil
    ctypedef struct PyFrameObject:
        pass
    PyFrameObject* PyEval_GetFrame()
    PyObject* PyFrame_GetGenerator(PyFrameObject* frame)
    int gyro_alone(PyObject* o) nogil
    int gyro_frees(PyObject* o) nogil
    int GYRO_SEQ
    int gyro_ts_alive(PyThreadState* ts)
    int gyro_frame_offset(PyThreadState* ts, void* fp)
    int gyro_loop_end(object code, int head)
    PyThreadState* PyThreadState_Get()
    void Py_INCREF(PyObject*)
    void Py_DECREF(PyObject*)
    int pthread_getcpuclockid(unsigned long thread, clockid_t* clock_id) nogil
    unsigned long pthread_self() nogil


DEF MAX_SLOTS = 65536
DEF WARM_HITS = 256             # see the module docstring
WARM = WARM_HITS

DEF T_HELLO = 1
DEF T_SLOTS = 2
DEF T_WINDOW = 3
DEF T_FINAL = 4
DEF T_EXTRA = 5
DEF T_EXITING = 6                # the interpreter's exit began: after this, only its finalisation
DEF T_LIVE = 16                  # gyroscope -> program: the live decisions (marshal'd list of dicts)

# ---- counters (touched by the callbacks, under the GIL) ----------------------------------
cdef uint32_t _hits[MAX_SLOTS]
cdef int64_t _t_first[MAX_SLOTS]
cdef int64_t _t_out[MAX_SLOTS]      # when the last timed callback of the slot returned
# the gaps from one callback's return to the next one's start (one frame's consecutive hits),
# summed per quarter of the timed hits: a quarter that the thread spent preempted (a busy
# machine: milliseconds in one gap) is left out by the median of the quarters (_burst_span)
DEF QUARTERS = 4
cdef int64_t _gap_sum[MAX_SLOTS][QUARTERS]
cdef uint32_t _gap_n[MAX_SLOTS][QUARTERS]
# the other callbacks inside a gap (a generator the loop draws from, a function it calls, an inner
# loop, while their own locations are armed) are not the loop's time: each callback adds its own
# duration to _cb_ns and one to _cb_n; a gap leaves out the callbacks' durations since the slot's
# last return, and counts them (_gap_cbs) so that bridges/channel.py takes off their dispatch too
cdef int64_t _cb_ns = 0
cdef uint64_t _cb_n = 0
cdef int64_t _cb_ns_out[MAX_SLOTS]
cdef uint64_t _cb_n_out[MAX_SLOTS]
cdef uint32_t _gap_cbs[MAX_SLOTS][QUARTERS]
cdef unsigned long _last_tid[MAX_SLOTS]
# ... and of one frame: the hits of generators or coroutines that run the same loop in turn on
# one thread (asyncio tasks), or of a recursive function's loop, interleave; a gap from one
# frame's hit to another's is no iteration of either
cdef void* _last_frame[MAX_SLOTS]
# a random number of extra hits (0..SKIP_SPAN-1) before a slot's timed hits, drawn per window:
# the timed hits land at a random depth of the loop, not always at its start (a loop entered
# right after a syscall runs its first few hundred iterations ~15% slower: cold caches)
DEF SKIP_SPAN = 256
DEF CALL_WARM = 8      # calls, resumes: timed from the 8th hit, DISABLEd at the 64th (CALL_K)
DEF CALL_K = 64
DEF SHORT_K = 8
DEF FREE_SEEN_NS = 200000   # agent/measure.py MIN_FREE_NS
cdef uint32_t _base[MAX_SLOTS]      # WARM_HITS for a loop, CALL_WARM for the others
cdef uint32_t _warm[MAX_SLOTS]      # this window: the hits before the timed ones (base + skip)
cdef uint32_t _lim[MAX_SLOTS]       # this window: DISABLE at this hit
cdef uint32_t _rng = 2463534242


cdef inline uint32_t _next_skip() noexcept nogil:
    global _rng
    _rng ^= _rng << 13
    _rng ^= _rng >> 17
    _rng ^= _rng << 5
    return _rng % SKIP_SPAN


cdef uint8_t _free_seen[MAX_SLOTS]   # the loop ran >= FREE_SEEN_NS with no callback in a window
# A loop timed by its hits (no free run read) is timed in its first TIMED_FIRST windows with hits,
# then in one such window in TIMED_EVERY, drawn at random (a program whose phases repeat every few
# windows is not always timed in the same one); the others get SHORT_K untimed hits. Its rate is
# the median over its timed windows (agent/measure.py), so it needs a few, not all: the 256 hits
# before each burst's timed ones were 60-75% of all callbacks (go, hexiom). A loop counted by a
# stepping local is timed in every window: its count needs its timed hits (see "induction").
DEF TIMED_FIRST = 1
DEF TIMED_EVERY = 4
cdef uint8_t _timed_n[MAX_SLOTS]     # windows whose burst this loop completed, timed (at most 255)
cdef uint8_t _stepping[MAX_SLOTS]    # a stepping local counted part of this loop in a window


cdef inline void _draw(int s) noexcept nogil:
    """The slot's hit budget for a new window: a loop is timed after WARM + a random skip, for
    K - WARM hits; a call or resume after CALL_WARM, up to CALL_K (no skip: cheaper, and only a
    call count depends on it). A loop whose iterator (not a local) a span read over a free run
    has its rate from those runs (agent/measure.py `_rate`): its timed hits would go unused, so
    its burst is SHORT_K hits, none timed (what opens its span and marks where the free run
    starts; its window says it saturated by flag bit 3, not by a span)."""
    if _base[s] == WARM_HITS and (_free_seen[s] or (_timed_n[s] >= TIMED_FIRST and not _stepping[s]
                                                    and _next_skip() % TIMED_EVERY != 0)):
        _warm[s] = SHORT_K
        _lim[s] = SHORT_K
    elif _base[s] == WARM_HITS:
        _warm[s] = WARM_HITS + _next_skip()
        _lim[s] = _warm[s] + (_k - WARM_HITS)
    else:
        _warm[s] = CALL_WARM
        _lim[s] = CALL_K
cdef unsigned long _thread[MAX_SLOTS]
cdef unsigned long _thread2[MAX_SLOTS]
cdef int _n_slots = 0
cdef int _last_slot = -1         # the slot of the last _hit (for the coroutine step timing)
# coroutine steps (asyncio: the time a step holds the event loop's thread), per RESUME slot
DEF LONG_STEP_NS = 100000000     # a step of >= 100 ms blocks the event loop
cdef int64_t _step_t0[MAX_SLOTS]
cdef unsigned long _step_tid[MAX_SLOTS]
cdef uint32_t _step_n[MAX_SLOTS]
cdef uint32_t _long_n[MAX_SLOTS]
cdef int64_t _step_total[MAX_SLOTS]
cdef int64_t _step_max[MAX_SLOTS]
cdef int64_t _long_total[MAX_SLOTS]
cdef int64_t _long_t0[MAX_SLOTS]
cdef dict _coro = {}             # id(code) -> True for watched coroutine codes
cdef uint32_t _k = 320
cdef uint64_t _dropped = 0
cdef uint64_t _errors = 0
cdef uint64_t _raw = 0
cdef bint _active = False

# (code, location, kind) -> slot: an open-addressing table in C, twice MAX_SLOTS (at most half
# full), so that a callback finds its slot with no Python object made (a dict keyed by an int
# made a long and hashed it at every hit)
DEF SLOT_TABLE = 2 * MAX_SLOTS
cdef uint64_t _tab_code[SLOT_TABLE]
cdef uint32_t _tab_sub[SLOT_TABLE]
cdef uint32_t _tab_slot[SLOT_TABLE]   # slot + 1; 0: empty
cdef uint32_t _tab_at[MAX_SLOTS]      # a slot's entry (_code_died makes it a tombstone)


cdef inline uint32_t _tab_index(uint64_t c, uint32_t sub) noexcept nogil:
    """Where the entry of (code address, location << 2 | kind) is, or the empty one it goes to."""
    cdef uint64_t h = (c >> 4) * <uint64_t>0x9E3779B97F4A7C15 ^ (<uint64_t>sub * <uint64_t>0xC2B2AE3D27D4EB4F)
    cdef uint32_t i = <uint32_t>(h >> 40) & (SLOT_TABLE - 1)
    while _tab_slot[i] != 0 and (_tab_code[i] != c or _tab_sub[i] != sub):
        i = (i + 1) & (SLOT_TABLE - 1)
    return i


cdef inline int _slot_at(object code, uint32_t sub) noexcept:
    """The slot of (code, location << 2 | kind), or -1."""
    return <int>_tab_slot[_tab_index(<uint64_t><void*>code, sub)] - 1


# the program's code objects being watched: id(code) -> a weak reference (a program that makes
# functions of its own without end, exec'd under its file's name, must see them freed as under
# python); when one dies, its id leaves every table here (_code_died), so that a new code at the
# same address is a new code to the bridge
watched = {}
cdef dict _wr_key = {}         # id(the weak reference) -> id(code)
cdef dict _code_slots = {}     # id(code) -> its slots
_rearm = {}                    # id(code) -> code, codes with a location disabled this window
cdef bint _rearm_pending = False
_DISABLE = None
_predicate = None              # callable(filename) -> bool: is this the program's own code?
_tool = -1
last_error = ""

# ---- gc ------------------------------------------------------------------------------------
cdef int64_t _gc_t0 = 0
cdef int64_t _gc_count[3]
cdef int64_t _gc_total[3]
cdef int64_t _gc_max[3]
cdef int64_t _gc_first[3]

# ---- the channel -----------------------------------------------------------------------------
cdef char* _desc = NULL          # slot descriptors not shipped yet
cdef size_t _desc_len = 0
cdef size_t _desc_cap = 0
cdef char* _desc_all = NULL      # every descriptor (re-sent by a forked child on its new connection)
cdef size_t _desc_all_len = 0
cdef size_t _desc_all_cap = 0
cdef int _sock = -1
# the socket's identity: a program that closes descriptors it did not open (a daemon closing
# every one above 2) may get our number back for a file or socket of its own; the bridge then
# neither writes to it, nor reads from it, nor closes it (_sock_ours)
cdef unsigned long _sock_dev = 0
cdef unsigned long _sock_ino = 0
DEF HIGH_FD = 512    # the socket moves up here (or to the last number the descriptor limit allows):
                     # the descriptors a program opens take the lowest free ones, as under python
cdef char _path[108]
cdef bint _follow = True
cdef int64_t _window_ns = 200000000
cdef pthread_mutex_t _send_mu    # one frame on the socket at a time
cdef pthread_mutex_t _wake_mu
# held while the shipper is started or stopped: two threads that fork at once (or a thread that
# forks while the program exits) both stopped it, and joined the same thread twice: a hang
cdef pthread_mutex_t _shipper_mu
cdef pthread_cond_t _wake
cdef pthread_t _shipper
cdef bint _shipper_running = False
cdef bint _stop_shipper = False
cdef bint _exiting = False
cdef bint _atexit_done = False
cdef bint _started = False
cdef unsigned long _shipper_ident = 0     # its thread state, made by `with gil`, is not the program's
_extra_sources = []              # callables returning a marshal-able object or None, drained per window


cdef inline int64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


# ---- growable byte buffers (C only: usable after the interpreter is finalised) ----------------
cdef int _grow(char** buf, size_t* cap, size_t need) noexcept nogil:
    cdef size_t c = cap[0]
    cdef char* nb
    if need <= c:
        return 0
    if c == 0:
        c = 4096
    while c < need:
        c *= 2
    nb = <char*>realloc(buf[0], c)
    if nb == NULL:
        return -1
    buf[0] = nb
    cap[0] = c
    return 0


cdef int _put(char** buf, size_t* length, size_t* cap, const void* data, size_t n) noexcept nogil:
    if _grow(buf, cap, length[0] + n) < 0:
        return -1
    memcpy(buf[0] + length[0], data, n)
    length[0] += n
    return 0


cdef int _send_all(const char* data, size_t n) noexcept nogil:
    """Send bytes on the socket (caller holds _send_mu); on a dead peer the bridge goes quiet."""
    global _sock, _active
    cdef long r
    cdef size_t done = 0
    if _sock < 0:
        return -1
    while done < n:
        r = send(_sock, data + done, n - done, MSG_NOSIGNAL)
        if r < 0:
            if errno == EINTR:
                continue
            close(_sock)     # gyroscope is gone, or read nothing for _send_timeout_s
            _sock = -1
            _active = False   # gyroscope is gone: stop counting, the program runs on untouched
            return -1
        done += <size_t>r
    return 0


cdef bint _sock_is_ours() noexcept nogil:
    """The connection's number still names our socket."""
    cdef stat st
    return (_sock >= 0 and fstat(_sock, &st) == 0 and S_ISSOCK(st.st_mode) and st.st_ino == _sock_ino
            and st.st_dev == _sock_dev)


cdef bint _sock_ours() noexcept nogil:
    """The connection is still ours; if the program closed it or took its number for something
    of its own, the bridge goes quiet and lets it be."""
    global _sock, _active
    if _sock_is_ours():
        return True
    _sock = -1
    _active = False
    return False


cdef int _send_frame_locked(uint8_t kind, const char* payload, size_t n) noexcept nogil:
    """One frame (the caller holds _send_mu), if the connection is still ours."""
    cdef char head[5]
    cdef uint32_t length = <uint32_t>(n + 1)
    cdef int r
    if not _sock_ours():
        return -1
    memcpy(head, &length, 4)
    head[4] = <char>kind
    r = _send_all(head, 5)
    if r == 0 and n:
        r = _send_all(payload, n)
    return r


cdef int _send_frame(uint8_t kind, const char* payload, size_t n) noexcept nogil:
    cdef int r
    pthread_mutex_lock(&_send_mu)
    r = _send_frame_locked(kind, payload, n)
    pthread_mutex_unlock(&_send_mu)
    return r


# ---- slots ---------------------------------------------------------------------------------
cdef int _describe(int s, object code, int offset, int kind, int dest) except -1:
    """Append the slot's descriptor (file, qualname, lines) to the buffers shipped to gyroscope."""
    cdef bytes f = (<str>code.co_filename).encode("utf-8", "surrogateescape")
    cdef bytes q = (<str>code.co_qualname).encode("utf-8", "surrogateescape")
    cdef uint32_t head[7]
    cdef int32_t first = code.co_firstlineno
    cdef int32_t line = 0
    cdef int32_t dline = 0
    if kind == 0:
        line = PyCode_Addr2Line(<PyCodeObject*>code, offset)
        dline = PyCode_Addr2Line(<PyCodeObject*>code, dest)
    head[0] = <uint32_t>s
    # bits 8-9: how many of the JUMP's two offsets are past the small-int cache (> 256): each is
    # a new int per callback, which the dispatch cost depends on (see calibrate)
    head[1] = <uint32_t>kind | ((<uint32_t>((offset > 256) + (dest > 256)) if kind == 0 else 0) << 8)
    memcpy(&head[2], &first, 4)
    memcpy(&head[3], &line, 4)
    memcpy(&head[4], &dline, 4)
    head[5] = <uint32_t>len(f)
    head[6] = <uint32_t>len(q)
    cdef char* fp = f
    cdef char* qp = q
    if (_put(&_desc, &_desc_len, &_desc_cap, head, 28) < 0 or _put(&_desc, &_desc_len, &_desc_cap, fp, head[5]) < 0
            or _put(&_desc, &_desc_len, &_desc_cap, qp, head[6]) < 0):
        raise MemoryError()
    _put(&_desc_all, &_desc_all_len, &_desc_all_cap, head, 28)
    _put(&_desc_all, &_desc_all_len, &_desc_all_cap, fp, head[5])
    _put(&_desc_all, &_desc_all_len, &_desc_all_cap, qp, head[6])
    return 0


cdef int _new_slot(uint32_t sub, object code, int offset, int kind, int dest) except -2:
    global _n_slots, _dropped
    cdef int s
    cdef uint32_t i
    if _n_slots >= MAX_SLOTS:
        _dropped += 1
        return -1
    s = _n_slots
    if not _calibrating:
        _describe(s, code, offset, kind, dest)
    if kind == 0:
        _loop_head[s] = dest
        _loop_jump[s] = offset
        _code_loops.setdefault(<Py_ssize_t><void*>code, []).append(s)
    _n_slots += 1
    _hits[s] = 0
    _thread[s] = 0
    _thread2[s] = 0
    _clear_gaps(s)
    _last_tid[s] = 0
    _base[s] = WARM_HITS if kind == 0 else CALL_WARM
    _free_seen[s] = 0
    _timed_n[s] = 0
    _stepping[s] = 0
    _draw(s)
    _clear_reads(s)
    _off[s] = 0
    _carry_frame[s] = NULL
    _step_t0[s] = 0
    _step_n[s] = 0
    _long_n[s] = 0
    _step_total[s] = 0
    _step_max[s] = 0
    _long_total[s] = 0
    if _calibrating:            # every gap timed, never disabled (_dispatch_ns)
        _base[s] = 0
        _warm[s] = 0
        _lim[s] = 0xFFFFFFFF
        _cal_slots.append(s)
    i = _tab_index(<uint64_t><void*>code, sub)
    _tab_code[i] = <uint64_t><void*>code
    _tab_sub[i] = sub
    _tab_slot[i] = <uint32_t>s + 1
    _tab_at[s] = i
    if not _calibrating:
        _code_slots.setdefault(<Py_ssize_t><void*>code, []).append(s)
    return s


cdef inline void _clear_reads(int s) noexcept nogil:
    """The slot's iterator readings and coverage flag of the window (see "spans")."""
    _iter_read[s] = 0
    _free_iters[s] = 0
    _free_ns[s] = 0
    _gap[s] = 0


cdef inline void _clear_gaps(int s) noexcept nogil:
    cdef int q
    for q in range(QUARTERS):
        _gap_sum[s][q] = 0
        _gap_n[s][q] = 0
        _gap_cbs[s][q] = 0


cdef int64_t _burst_span(int s, uint32_t h, int64_t* others) noexcept nogil:
    """The timed gaps of slot s as (h - its base warm-up) x the median quarter's mean gap (0: none
    timed), and in `others` the other callbacks in them at that quarter's mean (x (h - base)):
    bridges/channel.py divides by the same."""
    cdef double m[QUARTERS]
    cdef double c[QUARTERS]
    cdef double t
    cdef double u
    cdef int n = 0
    cdef int i, j
    others[0] = 0
    for i in range(QUARTERS):
        if _gap_n[s][i]:
            m[n] = _gap_sum[s][i] / <double>_gap_n[s][i]
            c[n] = _gap_cbs[s][i] / <double>_gap_n[s][i]
            n += 1
    if n == 0:
        return 0
    for i in range(1, n):        # insertion sort of at most 4, by the mean gap
        t = m[i]
        u = c[i]
        j = i - 1
        while j >= 0 and m[j] > t:
            m[j + 1] = m[j]
            c[j + 1] = c[j]
            j -= 1
        m[j + 1] = t
        c[j + 1] = u
    if n % 2:
        t = m[n // 2]
        u = c[n // 2]
    else:
        t = (m[n // 2 - 1] + m[n // 2]) / 2
        u = (c[n // 2 - 1] + c[n // 2]) / 2
    others[0] = <int64_t>(u * (h - _base[s]) + 0.5)
    return <int64_t>(t * (h - _base[s]))


# ---- spans: the loop's own iterator counts what the hits do not -----------------------------
# A for-loop over a range, a list, a tuple or a dict (its keys, values or items), or over an
# enumerate of one of those, keeps its iterator on the frame's value stack, and the iterator
# knows how many items it has handed out. At a loop hit, the bridge takes a reference to that
# iterator and notes its position (a span); when the span closes, the items taken since are
# exactly the iterations run since, the hits included: those not counted by hits are shipped as
# `iter_read`. A span closes at the next event of its frame outside the loop (the loop ended: a
# return, a yield, a backward jump of an enclosing or later loop), at a hit of its slot on
# another iterator (a new run of the loop), at the re-arm (under the GIL, in the shipper) and at
# exit. A yield inside the loop (a generator expression yields every item) only pauses it: the
# span stays open, and the bridge keeps a weak reference to the generator, so that the re-arm
# can tell a loop suspended at a yield (the generator alive, suspended, its frame inside the
# loop with the iterator on its stack) from one that ended (_gen_paused). From the end of the
# slot's burst (its last hit of the window, DISABLE) to that close the loop ran with no callback
# at all: when the close time is known (an event of its frame, or the re-arm while the frame
# still runs the loop), the items taken and the thread's CPU time give the loop's own rate,
# measured, not corrected for the callbacks (`free_iters`, `free_ns`).
# Coverage: a window's count of a loop is complete when every run of the loop in it was counted
# by hits or read by a span. The bridge flags the window (_gap) when that may not hold: the slot
# was disarmed at a hit with no span to carry on (no iterator to read, or too many spans), or a
# run ended while the slot was disarmed and its code was not re-armed at once (a short run, or
# the end seen only at the re-arm: the next runs until then went uncounted), it was disarmed in
# a process that forked (the run goes on in the child), or a thread other than the one that
# started the bridge made a callback in the window (it may have run the loop while the slot was
# disarmed). A loop whose windows were never flagged, counted on one thread, in a process whose
# last window arrived (bridges/channel.py), is counted exactly (agent/measure.py). A loop with
# several backward jumps (an if/else at the end of its body, a `continue`) shares one span among
# them: the iterator counts the loop's items whichever jump ran.
# Holding a range iterator changes nothing the program can see: it refers to no other object and
# has no finalizer, so letting go of it never runs code. A list, tuple or dict iterator holds its
# container until it is exhausted: it is taken only when something else holds the container too
# (gyro_loop_iter), so that a `break` frees nothing later than under python; an enumerate, only
# over such an iterator (a generator under it would see its `finally` run late). If the other
# holder lets go during the loop, the span closes at the loop's next hit; if the loop has no
# more hits in the window (its burst is over), a `break` then frees the container when the span
# closes (the frame's next event, or the re-arm), the last reference dropped by a pending call
# in the main thread, outside any callback (_let_go): that one case differs from python.
# Exhausted, a list or tuple iterator lets go of its sequence and (3.13) of its position: it
# then took as many items as the sequence had when last read (`seqlen`: at each hit of the span
# and as it closes). A list whose length changed between two readings may change again before
# its end: such a span's end is not counted (`resized`: the window is flagged). A dict iterator
# counts the items still to come, an enumerate the items taken: neither loses its position.
DEF MAX_SPANS = 32

cdef struct Span:
    int slot
    bint shared            # another slot of the same loop (a `continue`) hit it too: no rate
    bint burst             # the slot's burst ended in this span: pos_b, cpu_b are set
    bint clk_ok
    PyObject* it           # a strong reference
    void* frame
    PyThreadState* ts
    clockid_t clk          # the thread's CPU-time clock
    int64_t pos0           # the iterator's position at the span's first hit
    int64_t cpu0           # the thread's CPU time then
    int64_t prior          # the run's CPU time before this span (a span the re-arm closed mid-run)
    int64_t pos_b
    int64_t cpu_b
    uint32_t hits          # hits on this iterator in the span (the first one included)
    int lo                 # the loop's bytecode: its head (the jumps' dest) .. its end
    int hi
    int jump               # the offsets of its backward jumps seen (a second one: an if/else or
    int jump2              # `continue`; -1 until seen)
    PyObject* code         # (borrowed: compared, never read) the loop's code, and ...
    int depth              # ... where its iterator sits on the frame's value stack
    PyObject* gen_wr       # a weak reference to the generator whose frame it is, once it yielded
                           # inside the loop (the span stays open across; NULL before)
    int ind                # a loop with no iterator to read, counted by a local that changes by
    int64_t ind_base       # one step per iteration (its index, value at the span's start and
    int64_t ind_step       # step; see "induction"); -1: an iterator's span
    int64_t ind_gap        # the mean gap (ns) between the slot's timed hits when it opened
    bint seq               # a list or tuple iterator ...
    bint resized           # ... whose sequence's length changed between two readings
    int64_t seqlen         # ... and that length when last read (-1: not yet)

cdef Span _spans[MAX_SPANS]
cdef int _n_spans = 0
cdef bint _spans_on = False
cdef uint64_t _iter_read[MAX_SLOTS]   # this window: iterations counted by spans, not by hits
cdef uint64_t _free_iters[MAX_SLOTS]  # iterations run with no callback, in spans with a known end
cdef int64_t _free_ns[MAX_SLOTS]      # their thread CPU time
cdef uint8_t _gap[MAX_SLOTS]          # this window: bit 0, the loop may have run uncounted (see
                                      # "coverage"); bit 1, a local counted it ("induction")
cdef uint8_t _off[MAX_SLOTS]          # the loop slot is DISABLEd (until its code is re-armed)
cdef int32_t _loop_head[MAX_SLOTS]    # a loop slot's head (its jump's dest) ...
cdef int32_t _loop_jump[MAX_SLOTS]    # ... and its backward jump's offset
cdef dict _code_loops = {}            # id(code) -> its loop slots
cdef PyThreadState* _main_ts = NULL   # the thread that started the bridge (after fork: the child's)
cdef bint _others_ran = False         # this window: a callback came from another thread
cdef void* _carry_frame[MAX_SLOTS]    # a run the re-arm found going on (its frame) ...
cdef int64_t _carry_ns[MAX_SLOTS]     # ... and its CPU time so far: the next span of it goes on
# A run of a range loop that ends while its slot is disarmed (the burst is over) re-arms its code
# at once, so that the next run is counted from its first hit, when the run took at least this
# many times what the code's re-arm costs (its least so far: 0.5-5.5 us by its size, ~2-4 us from
# a callback of its own). The callback that re-arms never DISABLEs its own location (_span_event),
# so every such run pays the re-arm and two callbacks: +0.3% measured on runs of 0.8 ms.
DEF REARM_FACTOR = 200
_set_local_events = None
cdef dict _rearm_ns = {}              # id(code) -> the least re-arming it cost (ns)


cdef inline int64_t _cpu_of(clockid_t clk, bint* ok) noexcept nogil:
    cdef timespec ts
    if clock_gettime(clk, &ts) != 0:
        ok[0] = False
        return 0
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int64_t _span_pos(Span* sp, int* done) noexcept:
    """The position of the span's iterator (see gyro_iter_pos); an exhausted list or tuple
    iterator is at its sequence's length when last read."""
    cdef int64_t n = -1
    cdef int64_t v = 0
    cdef int64_t pos
    if sp.ind >= 0:     # (the caller knows the frame is alive)
        done[0] = 0
        if not gyro_local_int(sp.frame, sp.ind, &v) or (v - sp.ind_base) % sp.ind_step != 0 \
                or (v - sp.ind_base) // sp.ind_step < sp.seqlen:
            sp.resized = True   # the local stopped stepping: where the loop got to is unknown
            return sp.seqlen
        sp.seqlen = (v - sp.ind_base) // sp.ind_step
        return sp.seqlen
    pos = gyro_iter_pos(sp.it, done, &n)
    if not sp.seq:
        return pos
    if n < 0:
        return sp.seqlen
    if sp.seqlen >= 0 and n != sp.seqlen:
        sp.resized = True
    sp.seqlen = n
    return pos


cdef list _doomed = []             # iterators whose last reference frees a sequence (_let_go)
cdef bint _doomed_pending = False


cdef int _release_doomed(void* arg) noexcept:
    """A pending call (the main thread, outside any callback): drop the doomed iterators."""
    global _doomed_pending
    _doomed_pending = False
    try:
        del _doomed[:]
    except BaseException:
        pass
    return 0


cdef void _let_go(PyObject* it) noexcept:
    """Drop a span's reference to its iterator. When that would free a list or tuple (see
    "spans"), its items' finalizers must not run inside a callback (which holds the span table)
    nor in the shipper (not one of the program's threads): a pending call drops it instead."""
    global _doomed_pending
    if gyro_frees(it):
        try:
            _doomed.append(<object>it)
            if not _doomed_pending:
                _doomed_pending = Py_AddPendingCall(_release_doomed, NULL) == 0
        except BaseException:
            pass
    Py_DECREF(it)


cdef int _gen_paused(Span* sp) noexcept:
    """2 when the span's frame is a generator's, suspended inside the loop's body with the loop's
    iterator on its stack (it yielded there: the item's jump is still to come); else 0. The
    generator is alive (its weak reference says so), so its frame's memory is."""
    if sp.gen_wr == NULL:
        return 0
    gen = (<object>sp.gen_wr)()
    if gen is None:
        return 0
    try:
        suspended = None
        for name in ("gi_suspended", "cr_suspended", "ag_suspended"):   # a generator, coroutine ...
            suspended = getattr(gen, name, None)
            if suspended is not None:
                break
        if not suspended:
            return 0
    except BaseException:
        return 0
    return 2 if gyro_frame_in_loop(sp.frame, sp.code, sp.lo, sp.hi, sp.depth, sp.it) else 0


cdef void _watch_generator(Span* sp) noexcept:
    """A yield inside the span's loop (from its callback: the current frame is the generator's):
    keep a weak reference to the generator, which says later whether the loop is only paused."""
    cdef PyFrameObject* fo
    cdef PyObject* gen
    if sp.gen_wr != NULL:
        return
    try:
        fo = PyEval_GetFrame()
        if fo == NULL:
            return
        gen = PyFrame_GetGenerator(fo)      # a new reference, or NULL
        if gen == NULL:
            return
        try:
            wr = PyWeakref_NewRef(<object>gen, None)
        finally:
            Py_DECREF(gen)
        Py_INCREF(<PyObject*>wr)
        sp.gen_wr = <PyObject*>wr
    except BaseException:
        pass


cdef int _span_state(Span* sp) noexcept:
    """Where the span's loop is, seen from the shipper: 3, paused at one of its backward jumps
    seen (a disarmed jump fires no event when it resumes); 2, elsewhere in its body (or a call
    made from it, or a generator suspended at a yield in it: the item's jump is still to come);
    1, its frame is elsewhere; 0, returned."""
    cdef int off
    if not gyro_ts_alive(sp.ts):
        return _gen_paused(sp)
    off = gyro_frame_offset(sp.ts, sp.frame)
    if off == -1:
        return _gen_paused(sp)
    if off < sp.lo or off > sp.hi:
        return 1
    return 3 if off == sp.jump or off == sp.jump2 else 2


cdef int64_t _span_close(int j, int how, bint inside=False) noexcept:
    """Close span j. how: 0, the end time is unknown (counts only); 1, the loop ended or paused
    just now (an event of its frame); 2, from the shipper at the re-arm or exit: timed only if the
    frame is still running the loop. `inside`: a yield in the loop's body, whose item's jump is
    still to come (and counted as a hit if the slot is armed). Returns, when the loop's run ended
    while its slot was disarmed, how long the run took (> 0): the caller re-arms its code now or
    flags the window (see "coverage"); else 0."""
    global _n_spans
    cdef Span sp = _spans[j]
    cdef int done = 0
    cdef int64_t pos
    cdef int state = -1          # where the loop is (_span_state), once asked; -1 counts as 0
    if sp.ind >= 0 and how == 2:
        state = _span_state(&sp)
    if sp.ind >= 0 and (how == 0 or state == 0):
        sp.resized = True        # its frame may be gone: its local is not read
    pos = sp.seqlen if sp.ind >= 0 and sp.resized else _span_pos(&sp, &done)
    # where the resized sequence ended, or the local that stopped stepping got to: unknown
    cdef bint lost = sp.resized and (sp.ind >= 0 or (sp.seq and done))
    cdef bint ind_ok = sp.clk_ok
    cdef int64_t ind_cpu
    if sp.ind >= 0 and not lost and sp.ind_gap > 0:
        ind_cpu = _cpu_of(sp.clk, &ind_ok)
        if ind_ok and ind_cpu - sp.cpu_b > 2 * sp.ind_gap * (pos - sp.pos_b + 1):
            # far fewer steps than its time allows (each took under its timed gap): the loop
            # ended and started again unseen (an enclosing loop, or a new call in the same frame
            # memory, with no event of the frame), and the local is another run's
            lost = True
    cdef int64_t n = 0 if lost else pos - sp.pos0 - (<int64_t>sp.hits - 1)
    if inside and not _off[sp.slot]:
        n -= 1
    cdef int64_t cpu
    cdef bint ok = sp.clk_ok
    cdef bint timed = False
    cdef int64_t ended = 0
    cdef int s = sp.slot
    cdef bint disarmed = _off[s]
    if n > 0:
        _iter_read[s] += <uint64_t>n
    if sp.ind >= 0:
        _gap[s] |= 2             # counted by a local: never called exact (see "induction")
    if lost:
        _gap[s] |= 1
    elif sp.burst and how and pos > sp.pos_b:
        if how == 1:
            timed = True
        elif not done:
            if state < 0:
                state = _span_state(&sp)
            timed = state >= 2
        if timed:
            cpu = _cpu_of(sp.clk, &ok)
            if ok and cpu > sp.cpu_b:
                if not sp.shared:   # (another slot's hits ran in that stretch: not a clean rate)
                    _free_iters[s] += <uint64_t>(pos - sp.pos_b)
                    _free_ns[s] += cpu - sp.cpu_b
                if how == 1 and not inside and disarmed:
                    ended = sp.prior + cpu - sp.cpu0     # the run's CPU time (> 0)
    elif how == 2 and not done and state < 0:
        state = _span_state(&sp)
    if how == 2 and state >= 2:
        # the run goes on past the re-arm: its next span carries its length (for the early re-arm)
        if not timed:
            cpu = _cpu_of(sp.clk, &ok)
        if ok:
            _carry_frame[s] = sp.frame
            _carry_ns[s] = sp.prior + cpu - sp.cpu0
    if state == 2 and n > 0:
        # paused in the loop's body: the item in progress was read, and its jump is still to come,
        # counted as a hit once the re-arm that follows this close has armed it
        _iter_read[s] -= 1
    if disarmed and how and not ended and state < 2:
        _gap[s] |= 1        # the loop ended (or paused) with no re-arm to count its next run
    _n_spans -= 1
    if j != _n_spans:
        _spans[j] = _spans[_n_spans]
    _span_drop(&sp)
    return ended


cdef void _span_drop(Span* sp) noexcept:
    """Let go of what a span holds: its weak reference to a generator (dropping it runs no code)
    and its iterator (_let_go)."""
    if sp.gen_wr != NULL:
        Py_DECREF(sp.gen_wr)
    if sp.it != NULL:
        _let_go(sp.it)


cdef void _close_all_spans() noexcept:
    """Under the GIL, from the shipper (re-arm) or at exit."""
    while _n_spans > 0:
        _span_close(_n_spans - 1, 2)


cdef void _forget_spans() noexcept:
    """In a forked child: the spans were the parent's (their threads are not here)."""
    global _n_spans
    cdef int j
    for j in range(_n_spans):
        _span_drop(&_spans[j])
    _n_spans = 0


cdef bint _span_event(object code, int kind, int offset, int dest=-1) noexcept:
    """Any event: close the spans of this frame whose loop it is not in (the loop has ended; a
    backward jump to the loop's head, `dest`, is the loop's own); re-arm the code at once when a
    long run ended disarmed (see "coverage"). True when it re-armed the code: the callback that
    called it must not DISABLE its own location then (that would undo the re-arm there: the
    next run's end, a return or the enclosing loop's jump, would go unseen, and the run after it
    uncounted; a function called more than its return's K times in a window lost its runs)."""
    cdef void* f = gyro_frame_of(PyThreadState_Get())
    cdef int j = _n_spans - 1
    cdef int slots[MAX_SPANS]
    cdef int n_slots = 0
    cdef int s
    cdef int64_t ran
    cdef int64_t cost
    cdef bint inside
    cdef bint ok
    while j >= 0:
        inside = _spans[j].lo <= offset <= _spans[j].hi or dest == _spans[j].lo
        if _spans[j].frame == f and kind == 3 and inside:
            _watch_generator(&_spans[j])     # paused, not ended: the span stays open
            if _spans[j].gen_wr != NULL:
                j -= 1
                continue
        if _spans[j].frame == f and (kind == 1 or kind == 3 or not inside):
            s = _spans[j].slot
            ran = _span_close(j, 1, kind == 3 and inside)
            if ran > 0:
                # the least re-arm measured, but never above the guess: the shipper's re-arms (cold
                # caches, a busy machine) can cost several times a callback's, and a code never
                # re-armed early would only be measured there (a loop of 0.5 ms runs then lost
                # most of its runs in one CI check)
                cost = min(_rearm_ns.get(<Py_ssize_t><void*>code, 0) or _rearm_guess(code), _rearm_guess(code))
                if ran >= REARM_FACTOR * cost:
                    slots[n_slots] = s
                    n_slots += 1
                else:
                    _gap[s] |= 1      # a short run: its code waits for the window's re-arm
        j -= 1
    if n_slots:
        ok = _rearm_code(code)
        for j in range(n_slots):
            if ok:
                _off[slots[j]] = 0
            else:
                _gap[slots[j]] |= 1
        return ok
    return False


cdef inline void _note_rearm_cost(object code, int64_t ns):
    """The least a re-arm of this code cost so far (the shipper's, with cold caches, and ones taken
    while the machine is busy cost several times the usual)."""
    cdef Py_ssize_t key = <Py_ssize_t><void*>code
    old = _rearm_ns.get(key)
    if old is None or ns < old:
        _rearm_ns[key] = ns


cdef inline int64_t _rearm_guess(object code):
    """A code's re-arm cost before it was measured: ~0.3 us + ~2.6 ns per byte of bytecode
    (CPython 3.13: 0.46, 1.4 and 5.5 us for 60, 672 and 2020 bytes), with a margin."""
    return 400 + 6 * Py_SIZE(code)     # Py_SIZE: the code's length in 2-byte units


cdef bint _rearm_code(object code) noexcept:
    """Re-arm one code object (our tool's events only: see _rearm_codes), noting what it cost."""
    global _errors, last_error
    cdef int64_t t0 = _now()
    try:
        _set_local_events(_tool, code, 0)
        _set_local_events(_tool, code, LOCAL_EVENTS)
    except BaseException as e:
        _errors += 1
        last_error = repr(e)
        return False
    _note_rearm_cost(code, _now() - t0)
    return True


# ---- induction: a loop with no iterator to read, counted by a local that steps -----------------
# A while loop (`while i < n: ...; i += 1`), or a for-loop over what the bridge does not read,
# often has a local int that changes by the same step at every iteration. During the slot's
# timed hits the bridge watches the frame's int locals; at the burst's last hit, a local that
# stepped alike at each of them (>= IND_MIN_STEPS, never 0) opens a span that counts in its
# steps instead of an iterator's items: (value now - value then) / step iterations, read where
# the frame is known to be alive (an event of its own, or the re-arm with the frame on its
# thread's stack). Nothing says the local keeps stepping after the burst (a branch may step it
# twice), so such a count is never called exact (the window is flagged): it is the counted
# part, with the loop's own rate, measured without callbacks. A local that stops stepping
# (another step, a reset, no longer an int) loses the span's end. The local cannot tell one run
# from the next: no span opens inside a disarmed enclosing loop of the same code (the loop could
# end and start again with no event of its frame: _inside_disarmed_loop), and a reading that
# implies far fewer steps than the CPU time allows (each under two timed gaps) is lost too.
DEF IND_MIN_STEPS = 32
DEF IND_MAX_LOCALS = 64
cdef dict _ind_watch = {}          # slot -> [frame address, {local index: [value, step, steps]}]
cdef dict _ind_known = {}          # slot -> (local index, step, mean gap): the last local that opened a span


cdef int64_t _mean_gap(int s) noexcept:
    """The mean of slot s's timed gaps in this window (ns; 0: none)."""
    cdef int64_t total = 0
    cdef int64_t n = 0
    cdef int q
    for q in range(QUARTERS):
        total += _gap_sum[s][q]
        n += _gap_n[s][q]
    return total // n if n else 0


cdef bint _induction_hit(object code, int s, uint32_t h, int offset, int dest, PyThreadState* ts,
                         void* f) noexcept:
    """A hit of loop slot s with no iterator to read: count it in the frame's induction span, or
    watch the frame's int locals during the timed hits and open one at the burst's last hit.
    True: a span carries the loop on."""
    global _n_spans
    cdef int j = _n_spans - 1
    cdef int i
    cdef int best = -1
    cdef int64_t v = 0
    cdef Span* sp
    while j >= 0:
        if _spans[j].ind >= 0 and _spans[j].frame == f and _spans[j].lo == dest:
            _spans[j].hits += 1
            return True
        j -= 1
    if h <= _warm[s]:
        return False
    try:
        if h > _lim[s]:
            # the code was re-armed as a run ended (see "coverage"): the next run is counted from
            # its first hit by the local that counted the last one, while it is an int
            known = _ind_known.get(s)
            if known is None or not gyro_local_int(f, known[0], &v):
                return False
            return _open_induction(code, s, offset, dest, ts, f, known[0], v, known[1], known[2])
        w = _ind_watch.get(s)
        if w is None or w[0] != <Py_ssize_t>f or h == _warm[s] + 1:
            cands = {}
            for i in range(min(gyro_n_locals(f), IND_MAX_LOCALS)):
                if gyro_local_int(f, i, &v):
                    cands[i] = [v, 0, 0]
            _ind_watch[s] = [<Py_ssize_t>f, cands]
            return False
        cands = w[1]
        for i in list(cands):
            c = cands[i]
            if not gyro_local_int(f, i, &v) or v == c[0] or (c[2] and v - c[0] != c[1]):
                del cands[i]
                continue
            c[1] = v - c[0]
            c[0] = v
            c[2] += 1
        if h < _lim[s]:
            return False
        del _ind_watch[s]
        for i, c in cands.items():
            if c[2] >= IND_MIN_STEPS:
                best = i
                break
        if best < 0:
            return False
        gap = _mean_gap(s)
        _ind_known[s] = (best, cands[best][1], gap)
        return _open_induction(code, s, offset, dest, ts, f, best, cands[best][0], cands[best][1], gap)
    except BaseException:
        return False


cdef bint _inside_disarmed_loop(object code, int head, int jump) noexcept:
    """Does a disarmed loop of the same code enclose the loop head..jump? Then the loop can end and
    start again with no event of its frame (the enclosing loop's jump would be one), and its
    local would be another run's when read (mandelbrot's escape loop inside a disarmed loop over
    the pixels: half its count)."""
    cdef int t
    for t in _code_loops.get(<Py_ssize_t><void*>code, ()):
        if _off[t] and _loop_head[t] <= head and _loop_jump[t] >= jump and (_loop_head[t], _loop_jump[t]) != (head, jump):
            return True
    return False


cdef bint _open_induction(object code, int s, int offset, int dest, PyThreadState* ts, void* f,
                          int local, int64_t base, int64_t step, int64_t gap) noexcept:
    """Open an induction span at a hit that ends the slot's burst (see "induction"); `gap`: the
    mean gap between its timed hits (ns), an iteration's time with a callback in it."""
    cdef Span* sp
    if _n_spans >= MAX_SPANS or _inside_disarmed_loop(code, dest, offset):
        return False
    sp = _new_span(s, code, ts, f, NULL, dest, offset, offset)
    sp.ind = local
    sp.ind_base = base
    sp.ind_step = step
    sp.ind_gap = gap
    sp.seqlen = 0
    sp.pos0 = 0
    sp.pos_b = 0
    sp.cpu_b = sp.cpu0
    sp.burst = sp.clk_ok
    _gap[s] |= 2
    return True


cdef Span* _new_span(int s, object code, PyThreadState* ts, void* f, PyObject* it, int lo, int hi,
                     int jump) noexcept:
    """The next span of the table (the caller checked there is room), for slot s's loop lo..hi in
    frame f, at its first hit (a backward jump at `jump`); `it` is taken by the caller."""
    global _n_spans
    cdef Span* sp = &_spans[_n_spans]
    _n_spans += 1
    sp.slot = s
    sp.shared = False
    sp.burst = False
    sp.it = it
    sp.code = <PyObject*>code
    sp.depth = gyro_stack_depth(f) if it != NULL else -1
    sp.gen_wr = NULL
    sp.frame = f
    sp.ts = ts
    sp.clk_ok = pthread_getcpuclockid(pthread_self(), &sp.clk) == 0
    sp.cpu0 = _cpu_of(sp.clk, &sp.clk_ok) if sp.clk_ok else 0
    sp.prior = 0
    if _carry_frame[s] == f:
        sp.prior = _carry_ns[s]    # the run the re-arm found going on (see _span_close)
    _carry_frame[s] = NULL
    sp.seq = False
    sp.ind = -1
    sp.resized = False
    sp.seqlen = -1
    sp.hits = 1
    sp.lo = lo
    sp.hi = hi
    sp.jump = jump
    sp.jump2 = -1
    return sp


cdef bint _span_hit(object code, int s, uint32_t h, int offset, int dest) noexcept:
    """A hit of loop slot s: count it in the span of its iterator, opening one if needed; at the
    end of the slot's burst, note where the loop starts to run free. True: a span holds the loop's
    iterator (this slot's, or another backward jump's of the same loop: an if/else or `continue`)."""
    global _n_spans
    cdef PyThreadState* ts = PyThreadState_Get()
    cdef void* f = gyro_frame_of(ts)
    cdef PyObject* it = gyro_loop_iter(f)
    cdef int j
    cdef int done = 0
    cdef int end = -1
    cdef Span* sp
    if it == NULL:
        return _induction_hit(code, s, h, offset, dest, ts, f)
    j = _n_spans - 1
    while j >= 0 and _spans[j].it != it:
        j -= 1
    if j < 0 or _spans[j].lo != dest or _spans[j].frame != f:
        end = gyro_loop_end(code, dest)
        if end < 0:        # not a for-loop: the iterator on the stack is an enclosing loop's
            return _induction_hit(code, s, h, offset, dest, ts, f)
        if j >= 0:
            _span_close(j, 0)      # another loop takes over the iterator (one left it with `break`)
            j = -1
    if j < 0 and gyro_alone(it):   # a list, tuple or dict only the loop holds (see "spans")
        return _induction_hit(code, s, h, offset, dest, ts, f)
    if j >= 0:
        sp = &_spans[j]
        sp.hits += 1
        if gyro_alone(it):
            # the container's other holders let go: holding its iterator past a `break` would
            # now keep it alive (see "spans"); the rest of the run is not read
            _span_close(j, 0)
            return False
        if sp.seq:
            _span_pos(sp, &done)    # another reading of its sequence's length (see "spans")
        if sp.slot != s:
            sp.shared = True
            if offset != sp.jump:
                sp.jump2 = offset
            if offset > sp.hi:
                sp.hi = offset
    else:
        # a new run of the loop on this thread: the old one ended unseen (unless it is a
        # generator's or coroutine's paused at a yield in the loop: another frame's run)
        j = _n_spans - 1
        while j >= 0:
            if _spans[j].slot == s and _spans[j].ts == ts and _spans[j].gen_wr == NULL:
                _span_close(j, 0)
                break
            j -= 1
        if _n_spans >= MAX_SPANS:
            return False
        Py_INCREF(it)
        sp = _new_span(s, code, ts, f, it, dest, end if end > offset else offset, offset)
        sp.seq = gyro_kind(it) == GYRO_SEQ
        sp.pos0 = _span_pos(sp, &done)
    if h >= _lim[s] and sp.slot == s and sp.clk_ok:
        sp.pos_b = _span_pos(sp, &done)
        sp.cpu_b = _cpu_of(sp.clk, &sp.clk_ok)
        sp.burst = True
    return True


cdef inline object _hit(object code, int offset, int kind, int dest, int64_t t_in=0):
    """Count one hit; return DISABLE when the slot has had K hits in this window. t_in: when the
    callback started, if it did work before (else now)."""
    global _raw, _errors, last_error, _last_slot, _rearm_pending, _others_ran, _cb_ns, _cb_n
    if t_in == 0:
        t_in = _now()    # first: the gap to the last return excludes this callback's work
    cdef int64_t t_out
    cdef int s
    cdef int q
    cdef uint32_t h
    cdef unsigned long tid = PyThread_get_thread_ident()
    cdef void* fr
    cdef bint rearmed = False
    _raw += 1
    cdef uint32_t sub = ((<uint32_t>offset & 0xFFFFFF) << 2) | <uint32_t>kind
    s = _slot_at(code, sub)
    if s < 0:
        try:
            s = _new_slot(sub, code, offset, kind, dest)
        except BaseException as e:  # never raise into the program
            _errors += 1
            last_error = repr(e)
            return _DISABLE
        if s < 0:
            _last_slot = -1
            return _DISABLE
    _last_slot = s
    h = _hits[s] + 1
    _hits[s] = h
    if _spans_on:
        if PyThreadState_Get() != _main_ts:
            _others_ran = True
        if _n_spans and kind == 0:
            rearmed = _span_event(code, kind, offset, dest)
        if kind == 0 and not _span_hit(code, s, h, offset, dest) and h == _lim[s]:
            _gap[s] |= 1        # disarmed with no span to carry on
    if h == 1:
        _t_first[s] = t_in
        _thread[s] = tid
    elif tid != _thread[s] and _thread2[s] == 0:
        _thread2[s] = tid
    # the rate: the gaps between the last K - WARM hits of one frame, each from the return of one
    # callback to the start of the next (after WARM + a random skip: the first hits are slow)
    fr = gyro_frame_of(PyThreadState_Get())
    if h > _warm[s] and h <= _lim[s] and tid == _last_tid[s] and fr == _last_frame[s]:
        q = <int>((h - _warm[s] - 1) * QUARTERS // (_lim[s] - _warm[s]))
        if q >= QUARTERS:
            q = QUARTERS - 1
        _gap_sum[s][q] += t_in - _t_out[s] - (_cb_ns - _cb_ns_out[s] - _t_out[s])
        _gap_cbs[s][q] += <uint32_t>(_cb_n - _cb_n_out[s])
        _gap_n[s][q] += 1
    _last_tid[s] = tid
    _last_frame[s] = fr
    r = None
    if h >= _lim[s] and not rearmed:
        _rearm[<Py_ssize_t><void*>code] = code
        _rearm_pending = True
        if kind == 0:
            _off[s] = 1
        r = _DISABLE
    _cb_n += 1
    if h >= _warm[s]:
        # the slot's next gap leaves out the callbacks' durations added from here on but this
        # one's (its end, t_out, is taken last: what follows it is in the calibrated dispatch)
        _cb_ns_out[s] = _cb_ns - t_in
        _cb_n_out[s] = _cb_n
        t_out = _now()
        _t_out[s] = t_out
    else:
        t_out = _now()
    _cb_ns += t_out - t_in
    return r


# ---- the callbacks -------------------------------------------------------------------------
LOCAL_EVENTS = 0


DEF CO_COROUTINE_FLAGS = 0x80 | 0x100 | 0x200    # CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR


def on_py_start(code, int offset):
    """PY_START: decide once whether this code is the program's (and arm it); a coroutine's start
    is the first step of a task, timed like a resume; anything else: DISABLE."""
    global _errors, last_error
    if not _active:
        return _DISABLE
    try:
        key = <Py_ssize_t><void*>code
        if key in _coro:
            return _step_begin(code)
        if key not in watched and _predicate(code.co_filename):
            wr = PyWeakref_NewRef(code, _code_died)
            watched[key] = wr
            _wr_key[<Py_ssize_t><void*>wr] = key
            if code.co_flags & CO_COROUTINE_FLAGS:
                _coro[key] = True
            _sys.monitoring.set_local_events(_tool, code, LOCAL_EVENTS)
            if key in _coro:
                return _step_begin(code)
    except BaseException as e:
        _errors += 1
        last_error = repr(e)
    return _DISABLE


def _code_died(wr):
    """A watched code object was freed: forget its id (and its slots' entries in the table)."""
    cdef Py_ssize_t key = _wr_key.pop(<Py_ssize_t><void*>wr, 0)
    cdef uint32_t i
    if not key:
        return
    watched.pop(key, None)
    _coro.pop(key, None)
    _code_loops.pop(key, None)
    _rearm_ns.pop(key, None)
    for s in _code_slots.pop(key, ()):
        i = _tab_at[<int>s]
        _tab_code[i] = 1    # a tombstone: no object lives at address 1; probes go on past it


cdef object _step_begin(object code):
    cdef object r = _hit(code, 0, 2, 0)
    cdef int s = _last_slot
    if s >= 0:
        _step_t0[s] = _now()
        _step_tid[s] = PyThread_get_thread_ident()
    return r


cdef void _step_end(object code):
    """A coroutine step ended (yield or return): its time holding the thread."""
    cdef int s
    cdef int64_t d
    s = _slot_at(code, 2)
    if s < 0:
        return
    if _step_t0[s] == 0 or _step_tid[s] != PyThread_get_thread_ident():
        return
    d = _now() - _step_t0[s]
    _step_n[s] += 1
    _step_total[s] += d
    if d > _step_max[s]:
        _step_max[s] = d
    if d >= LONG_STEP_NS:
        _long_n[s] += 1
        _long_total[s] += d
        _long_t0[s] = _step_t0[s]
    _step_t0[s] = 0


def on_jump(code, int offset, int dest):
    """JUMP: a backward jump is one loop iteration; forward jumps are disabled for good."""
    if not _active or dest >= offset:
        return _DISABLE
    return _hit(code, offset, 0, dest)


def on_py_return(code, int offset, retval):
    if not _active:
        return _DISABLE
    cdef int64_t t_in = _now()
    cdef bint rearmed = False
    if _n_spans:
        rearmed = _span_event(code, 1, offset)
    if <Py_ssize_t><void*>code in _coro:
        _step_end(code)
    r = _hit(code, 0, 1, 0, t_in)
    return None if rearmed else r


def on_py_resume(code, int offset):
    if not _active:
        return _DISABLE
    if <Py_ssize_t><void*>code in _coro:
        return _step_begin(code)
    return _hit(code, 0, 2, 0)


def on_py_yield(code, int offset, retval):
    if not _active:
        return _DISABLE
    cdef int64_t t_in = _now()
    cdef bint rearmed = False
    if _n_spans:
        rearmed = _span_event(code, 3, offset)
    if <Py_ssize_t><void*>code in _coro:
        _step_end(code)
    r = _hit(code, 0, 3, 0, t_in)
    return None if rearmed else r


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


# ---- one window ------------------------------------------------------------------------------
cdef char* _out = NULL          # the window frame being built (only while _send_mu is held)
cdef size_t _out_len = 0
cdef size_t _out_cap = 0


cdef void _build_hits() noexcept nogil:
    """Start the window frame in _out: header and the hit records since the last window (reset).
    Called under the GIL, or after finalisation (no Python code can run then)."""
    global _out_len, _others_ran
    cdef int s
    cdef uint32_t n_hits = 0
    cdef uint32_t h
    cdef int64_t i64
    cdef uint64_t u64
    cdef int64_t others = 0
    cdef char rec[80]
    _out_len = 0
    i64 = _now()
    memcpy(rec, &i64, 8)
    memcpy(rec + 8, &_raw, 8)
    memcpy(rec + 16, &_dropped, 8)
    memcpy(rec + 24, &_errors, 8)
    memset(rec + 32, 0, 8)
    _put(&_out, &_out_len, &_out_cap, rec, 40)
    for s in range(_n_slots):
        h = _hits[s]
        if _others_ran and _base[s] == WARM_HITS and (h or _iter_read[s]):
            _gap[s] |= 1     # another thread ran the program's code: it may have run this loop unseen
        if h or _iter_read[s] or _free_ns[s] or _gap[s]:
            # "span": the timed gaps as hits - WARM of the median quarter's mean (_burst_span)
            i64 = _burst_span(s, h, &others) if h >= _lim[s] else 0
            memcpy(rec, &s, 4)
            memcpy(rec + 4, &h, 4)
            memcpy(rec + 8, &_t_first[s], 8)
            memcpy(rec + 16, &i64, 8)
            u64 = _thread[s]
            memcpy(rec + 24, &u64, 8)
            u64 = _thread2[s]
            memcpy(rec + 32, &u64, 8)
            memcpy(rec + 40, &_iter_read[s], 8)
            memcpy(rec + 48, &_free_iters[s], 8)
            memcpy(rec + 56, &_free_ns[s], 8)
            u64 = _gap[s] | (8 if h >= _lim[s] else 0)
            memcpy(rec + 64, &u64, 8)
            if i64 == 0:
                others = 0
            memcpy(rec + 72, &others, 8)
            _put(&_out, &_out_len, &_out_cap, rec, 80)
            if _free_ns[s] >= FREE_SEEN_NS and not _gap[s] & 2:
                _free_seen[s] = 1   # (a local's count needs the timed hits: see "induction")
            if _gap[s] & 2:
                _stepping[s] = 1
            if i64 != 0 and _warm[s] > SHORT_K and _timed_n[s] < 255:
                _timed_n[s] += 1
            _clear_reads(s)
            _hits[s] = 0
            _thread[s] = 0
            _thread2[s] = 0
            _clear_gaps(s)
            _last_tid[s] = 0
            _draw(s)
            n_hits += 1
    _others_ran = False
    if _out != NULL:
        memcpy(_out + 32, &n_hits, 4)


cdef void _build_threads():
    """Append (ident, native id) of every thread state of the interpreter but the shipper's (under
    the GIL): the program's threads (bridges/channel.py counts them)."""
    cdef uint32_t n = 0
    cdef uint64_t u64
    cdef char rec[16]
    cdef PyThreadState* ts = PyInterpreterState_ThreadHead(PyInterpreterState_Get())
    while ts != NULL:
        if _shipper_ident and ts.thread_id == _shipper_ident:
            ts = PyThreadState_Next(ts)
            continue
        u64 = ts.thread_id
        memcpy(rec, &u64, 8)
        u64 = ts.native_thread_id
        memcpy(rec + 8, &u64, 8)
        _put(&_out, &_out_len, &_out_cap, rec, 16)
        n += 1
        ts = PyThreadState_Next(ts)
    if _out != NULL:
        memcpy(_out + 36, &n, 4)


cdef void _build_steps() noexcept nogil:
    """Append the coroutine steps of the window: u32 n, then n x (u32 slot, u32 steps, u32 long
    steps, u32 0, i64 total ns, i64 longest ns, i64 long total ns, i64 last long start ns)."""
    cdef int s
    cdef uint32_t n = 0
    cdef uint32_t zero = 0
    cdef size_t at = _out_len
    cdef char rec[48]
    _put(&_out, &_out_len, &_out_cap, &n, 4)
    for s in range(_n_slots):
        if _step_n[s]:
            memcpy(rec, &s, 4)
            memcpy(rec + 4, &_step_n[s], 4)
            memcpy(rec + 8, &_long_n[s], 4)
            memcpy(rec + 12, &zero, 4)
            memcpy(rec + 16, &_step_total[s], 8)
            memcpy(rec + 24, &_step_max[s], 8)
            memcpy(rec + 32, &_long_total[s], 8)
            memcpy(rec + 40, &_long_t0[s], 8)
            _put(&_out, &_out_len, &_out_cap, rec, 48)
            _step_n[s] = 0
            _long_n[s] = 0
            _step_total[s] = 0
            _step_max[s] = 0
            _long_total[s] = 0
            n += 1
    if _out != NULL:
        memcpy(_out + at, &n, 4)
    # then this process's calibrated dispatch costs (0.0 until _calibrate_here ran)
    _put(&_out, &_out_len, &_out_cap, &_cal_near, 8)
    _put(&_out, &_out_len, &_out_cap, &_cal_far, 8)


cdef void _build_gc() noexcept nogil:
    cdef int g
    cdef char rec[32]
    for g in range(3):
        memcpy(rec, &_gc_count[g], 8)
        memcpy(rec + 8, &_gc_total[g], 8)
        memcpy(rec + 16, &_gc_max[g], 8)
        memcpy(rec + 24, &_gc_first[g], 8)
        _put(&_out, &_out_len, &_out_cap, rec, 32)
        _gc_count[g] = 0
        _gc_total[g] = 0
        _gc_max[g] = 0


cdef object _drain_python(bint calibrate):
    """Under the GIL: collect the extra sources; at the first window (with `calibrate`: never at
    the exit, whose time the program waits for), calibrate the dispatch cost here. (The disabled
    locations are re-armed later in the window: _rearm_codes.)"""
    global _errors, last_error
    if not _cal_done and calibrate and _now() >= _cal_after:
        _calibrate_here()
    extras = []
    for src in _extra_sources:
        try:
            x = src()
            if x is not None:
                extras.append(_marshal.dumps(x))
        except BaseException as e:
            _errors += 1
            last_error = repr(e)
    return extras


cdef void _rearm_codes():
    """Under the GIL: re-arm the codes with a disabled location. The shipper does it at a random
    moment of the window, not right after the drain: the timed hits that follow must not
    coincide with gyroscope's own work on the window just shipped (decoding it on the other core
    slowed them by ~10%)."""
    global _rearm_pending
    _close_all_spans()      # before the hits start again (see "spans")
    memset(_off, 0, _n_slots)
    _rearm_pending = False
    codes = list(_rearm.values())
    _rearm.clear()
    for code in codes:
        _rearm_code(code)


cdef bint _drain_and_build(char** e, size_t* elen, size_t* ecap, char** d, size_t* dlen) noexcept with gil:
    """The window's Python part, under the GIL: the extras drained into e, the frame built in
    _out, the new slot descriptors handed over in d; True with _send_mu held. (Its own function,
    so that the Python objects it uses are released before the GIL is: a nogil function that
    holds one takes the GIL again at its end to release it, after the shipper's finalisation
    check, and crashed the process when the interpreter had been finalised meanwhile.)"""
    cdef uint32_t n32
    if _sock < 0 or _exiting:   # at exit, _last_window ships under the GIL instead
        return False
    try:
        for b in _drain_python(True):
            n32 = <uint32_t>len(b)
            _put(e, elen, ecap, &n32, 4)
            _put(e, elen, ecap, <char*>(<bytes>b), n32)
    except BaseException:
        pass
    pthread_mutex_lock(&_send_mu)   # nobody holding _send_mu ever waits for the GIL
    _build_window(d, dlen)
    return True


cdef void _build_window(char** d, size_t* dlen):
    """The window's frame in _out (under the GIL and _send_mu), and the slot descriptors made
    since the last one handed over in d (the callbacks append new ones to a fresh buffer)."""
    global _desc, _desc_len, _desc_cap
    _build_hits()
    _build_threads()
    _build_gc()
    _build_steps()
    d[0], dlen[0] = _desc, _desc_len
    _desc, _desc_len, _desc_cap = NULL, 0, 0


cdef void _ship_window() noexcept nogil:
    """One window: drain under the GIL (microseconds), send after releasing it. Holds _send_mu
    from the drain to the last frame, so the frames of one window stay together. No Python
    object here (see _drain_and_build)."""
    cdef char* e = NULL
    cdef size_t elen = 0
    cdef size_t ecap = 0
    cdef char* d = NULL
    cdef size_t dlen = 0
    cdef size_t pos = 0
    cdef uint32_t n32
    if _drain_and_build(&e, &elen, &ecap, &d, &dlen):
        if dlen:
            _send_frame_locked(T_SLOTS, d, dlen)
        _send_frame_locked(T_WINDOW, _out, _out_len)
        while pos + 4 <= elen:
            memcpy(&n32, e + pos, 4)
            _send_frame_locked(T_EXTRA, e + pos + 4, n32)
            pos += 4 + n32
        pthread_mutex_unlock(&_send_mu)
        if _ship_delay_us and _ship_delay_after:   # tests (set_ship_delay)
            usleep(_ship_delay_us)
    if d != NULL:
        free(d)
    if e != NULL:
        free(e)


cdef long _shipper_tid = 0


# ---- the return path: live decisions from gyroscope ------------------------------------------
cdef char* _in = NULL            # bytes received, not yet a whole frame (shipper thread only)
cdef size_t _in_len = 0
cdef size_t _in_cap = 0
cdef char* _live = NULL          # the payload of the last LIVE frame
cdef size_t _live_len = 0
cdef size_t _live_cap = 0
cdef uint64_t _live_version = 0
cdef pthread_mutex_t _live_mu
_live_cache = (0, [])


cdef void _receive() noexcept nogil:
    """Read what gyroscope sent (never blocks) and keep the last LIVE frame."""
    global _in_len, _live_len, _live_version
    cdef char chunk[65536]
    cdef long r
    cdef uint32_t length
    cdef size_t pos
    if not _sock_ours():
        return
    while True:
        r = recv(_sock, chunk, 65536, MSG_DONTWAIT)
        if r <= 0:
            break
        if _put(&_in, &_in_len, &_in_cap, chunk, <size_t>r) < 0:
            _in_len = 0
            return
    pos = 0
    while _in_len - pos >= 5:
        memcpy(&length, _in + pos, 4)
        if length < 1 or _in_len - pos - 4 < length:
            break
        if <uint8_t>_in[pos + 4] == T_LIVE:
            pthread_mutex_lock(&_live_mu)
            _live_len = 0
            _put(&_live, &_live_len, &_live_cap, _in + pos + 5, length - 1)
            _live_version += 1
            pthread_mutex_unlock(&_live_mu)
        pos += 4 + length
    if pos:
        memmove(_in, _in + pos, _in_len - pos)
        _in_len -= pos


def live_decisions():
    """(version, decisions): the live decisions gyroscope sent last (version 0, [] before any).
    Decoded once per version; cheap to call often."""
    global _live_cache
    cdef uint64_t v
    cdef bytes payload = None
    pthread_mutex_lock(&_live_mu)
    v = _live_version
    if v != _live_cache[0] and _live_len:
        payload = _live[:_live_len]
    pthread_mutex_unlock(&_live_mu)
    if payload is not None:
        try:
            _live_cache = (v, _marshal.loads(payload))
        except Exception:
            _live_cache = (v, [])
    return _live_cache


DEF ORPHAN_CHECK_NS = 50000000   # how often the shipper asks whether it is the last thread


cdef int _read_proc(const char* path, char* buf, int size) noexcept nogil:
    cdef int fd = open(path, O_RDONLY | O_CLOEXEC)
    cdef long n
    if fd < 0:
        return 0
    n = read(fd, buf, size - 1)
    close(fd)
    if n < 0:
        n = 0
    buf[n] = 0
    return <int>n


cdef bint _program_gone() noexcept nogil:
    """The program's threads have all ended without the interpreter's exit: a process forked
    from a thread whose function then returned (or raised SystemExit) had that thread, the
    group's leader, as its only one; python's process ends with it, and the shipper, the last
    thread left, must not keep it alive (a parent waiting for such children hung). True when the
    leader is a zombie and no thread but it and the shipper is left."""
    cdef char buf[2048]
    cdef int n = _read_proc("/proc/self/stat", buf, 2048)
    cdef int i = n - 1
    cdef long threads = 0
    while i > 0 and buf[i] != 41:    # the last ')': the state follows it
        i -= 1
    if i <= 0 or i + 2 >= n or buf[i + 2] != 90:   # 'Z'
        return False
    n = _read_proc("/proc/self/status", buf, 2048)
    for i in range(n - 9):
        if buf[i] == 10 and memcmp(buf + i + 1, b"Threads:", 8) == 0:
            i += 9
            while i < n and (buf[i] == 9 or buf[i] == 32):
                i += 1
            while i < n and 48 <= buf[i] <= 57:
                threads = threads * 10 + (buf[i] - 48)
                i += 1
            return 0 < threads <= 2
    return False


cdef bint _orphaned = False      # the shipper found itself the process's last thread


cdef bint _wait_until(int64_t deadline) noexcept nogil:
    """Sleep until the deadline (monotonic ns); True when the shipper must stop instead. Every
    ORPHAN_CHECK_NS it asks whether the program's threads are all gone (_program_gone)."""
    global _orphaned
    cdef timespec ts
    cdef int64_t until, now
    pthread_mutex_lock(&_wake_mu)
    while not _stop_shipper and not _exiting and _now() < deadline:
        until = _now() + ORPHAN_CHECK_NS
        if until > deadline:
            until = deadline
        ts.tv_sec = until // 1000000000
        ts.tv_nsec = until % 1000000000
        pthread_cond_timedwait(&_wake, &_wake_mu, &ts)
        now = _now()
        if until <= now < deadline and _program_gone():
            _orphaned = True
            break
    pthread_mutex_unlock(&_wake_mu)
    return _stop_shipper or _exiting or _sock < 0 or _orphaned


# The shipper's schedule. It outlives the shipper thread, which is stopped at each fork and
# started again after it: a program that forks every few ms (a process pool made per call) would
# otherwise start its window again at each fork and never ship one. A forked child starts anew.
cdef int64_t _ship_at = 0        # the end of the current window (0: none yet in this process)
cdef int64_t _rearm_at = 0       # when, inside it, the disabled locations are re-armed
cdef int64_t _wait_cur = 0       # the current window's length
cdef bint _rearmed = False


cdef void _next_window() noexcept nogil:
    """Schedule the next window: the first ones of a process are short (1/8, 1/4, 1/2 of a window,
    then whole ones), so that a short-lived process (a pool worker that is terminated) still
    ships what it did; the re-arm falls 20-80% into it."""
    global _ship_at, _rearm_at, _wait_cur, _rearmed
    if _ship_at == 0:
        _wait_cur = _window_ns // 8 if _window_ns >= 80000000 else _window_ns
    _ship_at = _now() + _wait_cur
    _rearm_at = _ship_at - _wait_cur + _wait_cur * (200 + <int64_t>(_next_skip() * 600 // SKIP_SPAN)) // 1000
    _rearmed = False
    if _wait_cur < _window_ns:
        _wait_cur = _wait_cur * 2 if _wait_cur * 2 < _window_ns else _window_ns


cdef void* _shipper_main(void* arg) noexcept nogil:
    global _shipper_tid, _shipper_ident, _rearmed
    _shipper_tid = syscall(SYS_gettid)
    _shipper_ident = pthread_self()
    # named, so the sampler can leave this thread out of the program's profile (bridges/pyspy.py)
    prctl(PR_SET_NAME, <unsigned long><const char*>b"gyroscope", 0, 0, 0)
    if _pinned:   # started on the forking thread's core (_start_shipper): free again from its next wake
        sched_setaffinity(0, sizeof(cpu_set_t), &_free_cpus)
    if _ship_at == 0:
        _next_window()
    # Py_IsInitialized() is 0 from the start of the interpreter's finalisation on: the GIL must
    # not be taken then (a finalised runtime has no interpreter to take it in). The exit joins
    # the shipper before that (_last_window); this covers an exit that did not run it (a program
    # that cleared the atexit callbacks).
    while True:
        if not _rearmed:
            if _wait_until(_rearm_at):   # re-arm what the last window disabled
                break
            _rearmed = True
            if _rearm_pending:
                if not Py_IsInitialized():
                    break
                with gil:
                    _rearm_codes()
        if _wait_until(_ship_at):
            break
        if _ship_delay_us and not _ship_delay_after:   # tests (set_ship_delay)
            usleep(_ship_delay_us)
        if not Py_IsInitialized():
            break
        _ship_window()
        _receive()
        _next_window()
    if _orphaned:   # the process ends as this thread does: what is left goes as at an exit
        _at_exit()
    return NULL


cdef cpu_set_t _free_cpus        # the cores the shipper may use (the starting thread's)
cdef bint _pinned = False


cdef void _start_shipper(bint here=False) noexcept nogil:
    """Start the shipper thread; `here`: on the calling thread's core. After a fork the new
    thread would start on the other core while the parent takes its copy-on-write faults, and
    each fault would then flush that core's TLB by an interrupt (a pool of 2 forked workers made
    per call cost ~0.25 ms more per fork; in a VM such interrupts are dear)."""
    global _shipper_running, _stop_shipper, _pinned
    cdef pthread_attr_t attr
    cdef cpu_set_t one
    cdef int cpu
    cdef sigset_t every, before
    if pthread_mutex_trylock(&_shipper_mu) != 0:
        return   # another thread is stopping it (to fork, or the exit): its own restart follows
    if _shipper_running or _sock < 0 or _exiting:   # (a fork's pending restart after the exit began)
        pthread_mutex_unlock(&_shipper_mu)
        return
    _stop_shipper = False
    _pinned = False
    pthread_attr_init(&attr)
    if here and sched_getaffinity(0, sizeof(cpu_set_t), &_free_cpus) == 0:
        cpu = sched_getcpu()
        if cpu >= 0:
            CPU_ZERO(&one)
            CPU_SET(cpu, &one)
            _pinned = pthread_attr_setaffinity_np(&attr, sizeof(cpu_set_t), &one) == 0
    # the shipper blocks every signal (it inherits the mask it is created with): a signal sent to
    # the process goes to the program's threads, as under python; a program that blocked SIGUSR1
    # to sigwait() for it was killed by it, delivered to the shipper
    sigfillset(&every)
    pthread_sigmask(SIG_SETMASK, &every, &before)
    if pthread_create(&_shipper, &attr, _shipper_main, NULL) == 0:
        _shipper_running = True
    pthread_sigmask(SIG_SETMASK, &before, NULL)
    pthread_attr_destroy(&attr)
    pthread_mutex_unlock(&_shipper_mu)


cdef void _stop_and_join_shipper(bint task_gone=True) noexcept nogil:
    """Stop the shipper and join it; `task_gone`: also wait until the kernel has dropped its
    thread (what os.fork() counts)."""
    global _shipper_running, _stop_shipper
    pthread_mutex_lock(&_shipper_mu)   # (called without the GIL: the shipper may need it to stop)
    if _shipper_running:
        pthread_mutex_lock(&_wake_mu)
        _stop_shipper = True
        pthread_cond_signal(&_wake)
        pthread_mutex_unlock(&_wake_mu)
        pthread_join(_shipper, NULL)
        _shipper_running = False
        if task_gone:
            _wait_task_gone()
    pthread_mutex_unlock(&_shipper_mu)


cdef extern from "<stdio.h>" nogil:
    int snprintf(char*, size_t, const char*, ...)


cdef void _wait_task_gone() noexcept nogil:
    """pthread_join returns when the thread has cleared its tid, a moment before the kernel drops
    it from the process's thread count, which os.fork() reads to decide its DeprecationWarning:
    wait (at most ~20 ms) until /proc/self/task/TID is gone."""
    cdef char path[64]
    cdef int i
    if _shipper_tid <= 0:
        return
    snprintf(path, 64, "/proc/self/task/%ld", _shipper_tid)
    for i in range(200):   # it is usually gone within microseconds: a sleep (~0.1 ms with the
        if access(path, F_OK) != 0:   # timer's slack) would cost every fork that much
            return
        sched_yield()
    for i in range(400):
        if access(path, F_OK) != 0:
            return
        usleep(50)


def _last_window() -> None:
    """The interpreter's exit, with the GIL, after the program's threads and its own atexit
    callbacks (ours was registered first, so it runs last) and before finalisation: the last
    window, lock profiler included. (The C-level PyUnstable_AtExit callbacks run only after the
    modules are torn down, too late for this.) The shipper is stopped and joined first, the GIL
    released meanwhile (it may be waiting for it to ship a window): left running, it could take
    the GIL of a runtime already finalised and crash the process at its very end (a core dump
    showed PyGILState_Ensure with no interpreter, in ~1 of 200 short-lived processes)."""
    global _exiting
    cdef char* d = NULL
    cdef size_t dlen = 0
    cdef uint32_t n32
    if _exiting:
        return
    # the interpreter's own exit runs atexit with no Python frame left; a program that calls
    # atexit._run_exitfuncs() itself goes on running: gyroscope must not stop sampling it then
    cdef bint exiting = PyEval_GetFrame() == NULL
    _exiting = True
    with nogil:
        _stop_and_join_shipper(False)
    if _sock < 0:
        return
    try:
        extras = _drain_python(False)
    except BaseException:
        extras = []
    _close_all_spans()
    with nogil:
        pthread_mutex_lock(&_send_mu)   # (the shipper is joined; a frame of another sender's ends first)
    _build_window(&d, &dlen)
    if dlen:
        _send_frame_locked(T_SLOTS, d, dlen)
        free(d)
    _send_frame_locked(T_WINDOW, _out, _out_len)
    for b in extras:
        n32 = <uint32_t>len(b)
        _send_frame_locked(T_EXTRA, <char*>(<bytes>b), n32)
    if exiting:
        _send_frame_locked(T_EXITING, NULL, 0)
    pthread_mutex_unlock(&_send_mu)


cdef void _at_exit() noexcept nogil:
    """After finalisation: ship the last partial window from C data (no Python API here)."""
    global _exiting, _atexit_done, _desc_len
    if _atexit_done:
        return
    _atexit_done = True
    _exiting = True
    pthread_mutex_lock(&_wake_mu)
    pthread_cond_signal(&_wake)
    pthread_mutex_unlock(&_wake_mu)
    if _sock < 0:
        return
    pthread_mutex_lock(&_send_mu)    # waits for a window the shipper may be sending
    _build_hits()
    _build_gc()
    _build_steps()
    if _desc_len:
        _send_frame_locked(T_SLOTS, _desc, _desc_len)
        _desc_len = 0
    _send_frame_locked(T_FINAL, _out, _out_len)
    pthread_mutex_unlock(&_send_mu)
    if _ship_delay_us:   # tests (set_ship_delay)
        usleep(2 * _ship_delay_us)


cdef int _send_timeout_s = 10
cdef unsigned int _ship_delay_us = 0
cdef bint _ship_delay_after = False


def set_ship_delay(double seconds, bint after_send=False) -> None:
    """Tests: the shipper waits this long at the end of each window before it takes the GIL to
    ship it (or, `after_send`, once it has sent it), as a thread the scheduler left waiting
    would (an exit then overtakes it), and the process's very end (after finalisation, see
    _at_exit) waits twice as long, so that such a shipper would wake in a runtime already
    finalised."""
    global _ship_delay_us, _ship_delay_after
    _ship_delay_us = <unsigned int>(seconds * 1e6)
    _ship_delay_after = after_send


cdef void _set_send_timeout(int fd) noexcept nogil:
    # a gyroscope that stops reading (stopped, hung) must not hold the program: a send that
    # waited this long for room (the socket's buffer holds many windows) makes the bridge quiet
    cdef timeval tv
    tv.tv_sec = _send_timeout_s
    tv.tv_usec = 0
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))


def set_send_timeout(int seconds) -> None:
    """How long a send may wait for gyroscope to read (default 10 s; tests make it short)."""
    global _send_timeout_s
    _send_timeout_s = seconds
    if _sock >= 0:
        _set_send_timeout(_sock)


cdef int _connect() noexcept nogil:
    global _sock, _sock_dev, _sock_ino
    cdef sockaddr_un addr
    cdef int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        return -1
    addr.sun_family = AF_UNIX
    memcpy(addr.sun_path, _path, 108)
    if connect(fd, &addr, sizeof(addr)) != 0:
        close(fd)
        return -1
    cdef rlimit lim
    cdef int to = HIGH_FD
    if getrlimit(RLIMIT_NOFILE, &lim) == 0 and lim.rlim_cur <= <unsigned long>HIGH_FD:
        to = <int>lim.rlim_cur - 1
    cdef int high = fcntl(fd, F_DUPFD_CLOEXEC, to) if to > fd else -1
    cdef stat st
    if high >= 0:
        close(fd)
        fd = high
    if fstat(fd, &st) != 0:
        close(fd)
        return -1
    _sock_dev = st.st_dev
    _sock_ino = st.st_ino
    _set_send_timeout(fd)
    _sock = fd
    return 0


cdef void _hello(bint forked):
    cdef bytes info = (_sys.version.split()[0] + "\0" + (_sys.executable or "") + "\0").encode(
        "utf-8", "surrogateescape")
    cdef char head[25]
    cdef int64_t v
    cdef char* buf = NULL
    cdef size_t n = 0
    cdef size_t cap = 0
    v = getpid()
    memcpy(head, &v, 8)
    v = getppid()
    memcpy(head + 8, &v, 8)
    v = _now()
    memcpy(head + 16, &v, 8)
    head[24] = 1 if forked else 0
    _put(&buf, &n, &cap, head, 25)
    _put(&buf, &n, &cap, <char*>info, len(info))
    _send_frame(T_HELLO, buf, n)
    free(buf)


# ---- fork ------------------------------------------------------------------------------------
cdef bint _parent_hook_registered = False


def _before_fork() -> None:
    global _parent_hook_registered
    if not _parent_hook_registered:
        # The after-fork hook that restarts the shipper is registered here, at the first fork, so
        # that it runs after the program's own hooks registered so far. CPython runs the
        # after_in_parent hooks in registration order and counts the process's threads after
        # them; a later hook that runs Python code (logging's releases its lock) would run our
        # pending call, and the restarted shipper would be counted: `import logging` + os.fork()
        # warned under gyroscope and not under python. (A module that registers a hook only after
        # the first fork can still do that; none of the standard library's does.)
        _parent_hook_registered = True
        _os.register_at_fork(after_in_parent=_after_fork_parent)
    with nogil:   # the shipper may be waiting for the GIL: let it finish its window, then join it
        _stop_and_join_shipper()


cdef int _restart_pending(void* arg) noexcept:
    _start_shipper(True)
    return 0


def _after_fork_parent() -> None:
    # Not now: CPython 3.13 counts the process's threads for its fork() DeprecationWarning after
    # running these hooks; the shipper restarts at the interpreter's next pending-call check.
    Py_AddPendingCall(_restart_pending, NULL)


def _after_fork_child() -> None:
    """A new process of the session: its own connection (or a quiet bridge with --no-subprocesses)."""
    global _sock, _active, _desc_len, _in_len, _main_ts, _ship_at, _cal_after, _shipper_running
    cdef int s
    _shipper_running = False   # (another thread may have restarted it in the parent meanwhile)
    pthread_mutex_init(&_send_mu, NULL)
    pthread_mutex_init(&_wake_mu, NULL)
    pthread_mutex_init(&_live_mu, NULL)
    pthread_mutex_init(&_shipper_mu, NULL)
    _in_len = 0
    _ship_at = 0   # a new process: short first windows
    if not _cal_done:   # the parent had not calibrated yet: not while this child is young (a pool
        _cal_after = _now() + 500000000   # worker of ~10 ms would spend ~4 ms on it)
    if _sock_is_ours():
        close(_sock)   # the parent's connection stays the parent's
    _sock = -1
    _forget_spans()
    _main_ts = PyThreadState_Get()
    for s in range(_n_slots):   # what the parent counted before the fork is the parent's
        # a loop disarmed at the fork may be running in this thread: its iterations until the
        # next re-arm are not counted here
        _clear_reads(s)
        _gap[s] = 5 if _off[s] else 0   # (bit 2: see the wire format's flags)
        _hits[s] = 0
        _thread[s] = 0
        _thread2[s] = 0
        _clear_gaps(s)
        _last_tid[s] = 0
    for s in range(3):
        _gc_count[s] = 0
        _gc_total[s] = 0
        _gc_max[s] = 0
    if not _follow or _connect() != 0:
        _active = False
        return
    _set_ptracer()
    _hello(True)
    _desc_len = 0
    if _desc_all_len:
        _send_frame(T_SLOTS, _desc_all, _desc_all_len)
    _start_shipper()


cdef int64_t _tracer_pid = 0


cdef void _set_ptracer() noexcept nogil:
    # Yama ptrace_scope=1 lets only ancestors trace: gyroscope's sampler (py-spy) is a child of
    # gyroscope, a sibling of this process; declaring gyroscope lets its descendants read us.
    if _tracer_pid > 0:
        prctl(PR_SET_PTRACER, <unsigned long>_tracer_pid, 0, 0, 0)


# ---- start ---------------------------------------------------------------------------------
def start(str socket_path, predicate, double window_s=0.2, int k=320, bint follow=True,
          long tracer_pid=0) -> bool:
    """Connect to gyroscope and start watching. False (and nothing changed) when it cannot. The
    loops' iterators are read (see "spans") on CPython 3.12 and 3.13 only."""
    global _predicate, _DISABLE, _k, _window_ns, _follow, _tool, _active, _started, LOCAL_EVENTS
    global _tracer_pid, _spans_on, _set_local_events, _main_ts
    cdef bytes p = socket_path.encode("utf-8", "surrogateescape")
    if _started or len(p) >= 108:
        return False
    memset(_path, 0, 108)
    memcpy(_path, <char*>p, len(p))
    pthread_mutex_init(&_send_mu, NULL)
    pthread_mutex_init(&_wake_mu, NULL)
    pthread_mutex_init(&_live_mu, NULL)
    pthread_mutex_init(&_shipper_mu, NULL)
    cdef pthread_condattr_t attr
    pthread_condattr_init(&attr)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
    pthread_cond_init(&_wake, &attr)
    if _connect() != 0:
        return False
    _started = True
    _tracer_pid = tracer_pid
    _set_ptracer()
    _predicate = predicate
    _k = k if k > WARM_HITS + 1 else WARM_HITS + 2
    _window_ns = <int64_t>(window_s * 1e9)
    _follow = follow
    _spans_on = gyro_frames_init(type(iter(range(0)))) == 1
    _main_ts = PyThreadState_Get()
    _set_local_events = _sys.monitoring.set_local_events
    _hello(False)
    mon = _sys.monitoring
    E = mon.events
    LOCAL_EVENTS = E.JUMP | E.PY_RETURN | E.PY_RESUME | E.PY_YIELD
    _DISABLE = mon.DISABLE
    _tool = _free_tool()
    if _tool >= 0:
        mon.use_tool_id(_tool, "gyroscope")
        mon.register_callback(_tool, E.PY_START, on_py_start)
        mon.register_callback(_tool, E.JUMP, on_jump)
        mon.register_callback(_tool, E.PY_RETURN, on_py_return)
        mon.register_callback(_tool, E.PY_RESUME, on_py_resume)
        mon.register_callback(_tool, E.PY_YIELD, on_py_yield)
        _active = True
        mon.set_events(_tool, E.PY_START)
    _gc.callbacks.append(gc_callback)
    _os.register_at_fork(before=_before_fork, after_in_child=_after_fork_child)   # after_in_parent: see _before_fork
    import atexit   # builtin; the one trace: atexit._ncallbacks() counts this callback
    atexit.register(_last_window)
    Py_AtExit(_at_exit)
    _start_shipper()
    return True


def add_source(fn) -> None:
    """Another in-process part (e.g. the lock profiler): `fn()` is called under the GIL once per
    window; a non-None result is marshal'd and shipped as an EXTRA frame."""
    _extra_sources.append(fn)


# ---- the dispatch cost of a callback --------------------------------------------------------
cdef double _cal_near = 0.0      # this process's own calibration (ns), shipped with every window
cdef double _cal_far = 0.0
cdef bint _cal_done = False
cdef int64_t _cal_after = 0      # not before (a forked child: see _after_fork_child)
cdef bint _calibrating = False   # the slots made now are the calibration's (_new_slot): never shipped
cdef list _cal_slots = []
_cal_codes = {}


cdef object _cal_loop(bint far):
    """A private loop `calib(n)`, a while loop as the loops the timed hits are for (a for-loop's
    range, list, tuple or dict iterator is read instead: "spans"), past offset 256 when `far`
    (both of the callback's offsets are then new ints)."""
    f = _cal_codes.get(far)
    if f is None:
        ns = {}
        pad = "    x = 0\n" * (200 if far else 1)
        exec(compile(f"def calib(n):\n{pad}    i = 0\n    while i < n:\n        i += 1\n",
                     "<gyroscope-calibration>", "exec"), ns)
        f = _cal_codes[far] = ns["calib"]
    return f


cdef int _free_tool():
    """A free sys.monitoring tool id: the unnamed 4 and 3 first, then OPTIMIZER's and PROFILER's
    (cProfile's since 3.12), never the debugger's or coverage's; -1 when none is free."""
    mon = _sys.monitoring
    for t in (4, 3, mon.OPTIMIZER_ID, mon.PROFILER_ID):
        if mon.get_tool(t) is None:
            return t
    return -1


cdef bint _other_tool():
    """Another sys.monitoring tool is registered (the program's own: coverage's, a profiler's):
    it would see the calibration's private loop run (and slow it), so none is run."""
    mon = _sys.monitoring
    return any(mon.get_tool(t) not in (None, "gyroscope") for t in range(6))


cdef double _dispatch_ns(object f, int n, int trials) except -1.0:
    """The median over trials of (mean gap between timed JUMP hits of f's loop) less (f's bare time
    per iteration), on a free sys.monitoring tool id, with the bridge's own JUMP callback (on_jump:
    its work disturbs the loop's caches as it does the program's loops) on a slot of its own that
    is never shipped; 0.0 when no tool id is free. The bridge's counters are left as they were."""
    global _active, _calibrating, _others_ran, _raw, _last_slot, _cb_ns, _cb_n
    mon = _sys.monitoring
    if _other_tool():   # (calibrate() too; _calibrate_here asks before it compiles its loops)
        return 0.0
    tool = _free_tool()
    if tool < 0:
        return 0.0
    import time
    clock = time.perf_counter_ns
    code = f.__code__
    saved = (_active, _others_ran, _raw, _last_slot, _cb_ns, _cb_n)
    cdef int s
    cdef int q
    cdef int64_t total
    cdef uint32_t count
    got = []
    mon.use_tool_id(tool, "gyroscope-calibration")
    try:
        _active = True
        _calibrating = True
        mon.register_callback(tool, mon.events.JUMP, on_jump)
        f(n)
        for _ in range(trials):
            t0 = clock()
            f(n)
            bare = (clock() - t0) / n
            mon.set_local_events(tool, code, mon.events.JUMP)
            f(n)
            mon.set_local_events(tool, code, 0)
            total = 0
            count = 0
            for s in _cal_slots:
                for q in range(QUARTERS):
                    total += _gap_sum[s][q]
                    count += _gap_n[s][q]
                _hits[s] = 0
                _last_tid[s] = 0
                _clear_gaps(s)
                _clear_reads(s)
            if count > <uint32_t>(n // 2):
                got.append(total / <double>count - bare)
    finally:
        mon.register_callback(tool, mon.events.JUMP, None)
        mon.free_tool_id(tool)
        _calibrating = False
        _active, _others_ran, _raw, _last_slot, _cb_ns, _cb_n = saved
    if not got:
        return 0.0
    got.sort()
    return max(0.0, got[len(got) // 2])


def calibrate(int n=2000, int trials=7, loop=None, bint far=True) -> float:
    """What one counted JUMP adds to the gap between two timed hits (ns): the interpreter's
    dispatch to the callback and back, measured on a private loop as the mean gap less the bare
    loop's time per iteration (median of the trials). The callback's own work is outside the
    gaps (bridges/channel.py subtracts this from each gap). `far`: the loop sits past offset 256,
    so both of the callback's offsets are new ints (CPython 3.13 here: ~58-73 ns far, ~34-46 ns
    near, from one process to another; loop bodies move it by +-3 ns within one). `loop(n)`:
    another loop instead, to check the calibration. The gyroscope process runs it as a fallback;
    each program process calibrates itself once (_calibrate_here)."""
    return _dispatch_ns(_cal_loop(far) if loop is None else loop, n, trials)


cdef void _calibrate_here():
    """Under the GIL, at the first window of this process: its own dispatch costs, near and far
    (~1 ms once: the program's layout and caches, not the gyroscope process's, which differ by
    up to ~10 ns per callback)."""
    global _cal_near, _cal_far, _cal_done, _errors, last_error
    if _cal_done:
        return
    _cal_done = True
    if _other_tool():
        return   # the windows ship 0.0: gyroscope's own calibration stands in
    try:
        _cal_near = _dispatch_ns(_cal_loop(False), 600, 5)
        _cal_far = _dispatch_ns(_cal_loop(True), 600, 5)
    except BaseException as e:
        _errors += 1
        last_error = repr(e)


def counters():
    """(raw callbacks, slots, dropped locations, callback errors, last error) of this process."""
    return _raw, _n_slots, _dropped, _errors, last_error
