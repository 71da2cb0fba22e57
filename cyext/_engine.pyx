# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CellPool: the compiled cell-pool engine of KERNEL.md.

Hot state is one packed 160-byte record per cell (2.5 cache lines), contiguous in one calloc'd
block (pages no cell has touched are not resident: a session's pool of 4,096 cells uses a few);
the §16.3 arrays are produced from it on export (see `_gather`), one cell's values for a record
by `_row`. Ingesting, allocating and reading records need no numpy (a session never loads it);
the numpy views (`_gather`, `_column`, `_alloc_mask`, `_core_load`) import it when called:

  offset  field
  0       ring[64]        uint8  (family << 6) | chi6, one slot shared by both rings
  64      chi_hist[64]    uint8  counts (<= 64)
  128     shell_hist[8]   uint8  (7 used)
  136     fam_hist[4]     uint8
  140     word4[4]        uint8  last closed word
  144     step            uint64
  152     omega12         uint16
  154     pos, valid, has_closed, key, allocated, pad   uint8 each

last_byte is word4[3] once a word has closed (words are the only input unit) and 0xAA
before; omega_sig and the parity commitment are functions of word4 and are computed when
read. Bucket weights are counts >> shift[key], the shift reset when membership changes.

The hot loop applies a whole word at once, which is exactly the byte cadence of KERNEL §6:
- chirality transport: chi6 after byte k = chi6 before the word ^ q6(b0) ^ ... ^ q6(bk), so the
  4 new ring entries are (chi0 * 0x01010101) ^ (xor of 4 per-position byte tables);
- an even-length word acts on (u6, v6) as a pure translation, the xor of per-position tables;
- words are the only input, so a cell's ring position is always 4 * words mod 64 and a word's
  4 ring slots are one aligned uint32; the ring is either filling (valid < 64) or full;
- shell_hist7 / family_hist4 are updated as packed byte counters (one 64-bit and one 32-bit add
  of table deltas per word; each counter stays in 0..64, so packed arithmetic is exact);
- the next cells' records are prefetched a few packets ahead.
The pure-Python twin (cyext.twin) runs the literal byte-by-byte rule; tests compare the two.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset, memcpy

from . import lawcore as law
from .api import PoolAPI
from .errors import KernelError

cdef packed struct Cell:
    uint8_t ring[64]
    uint8_t chi_hist[64]
    uint8_t shell_hist[8]
    uint8_t fam_hist[4]
    uint8_t word4[4]
    uint64_t step
    uint16_t omega12
    uint8_t pos
    uint8_t valid
    uint8_t has_closed
    uint8_t key
    uint8_t allocated
    uint8_t pad

_CELL_DTYPE = None


def cell_dtype():
    """The numpy structured dtype of one Cell (numpy is imported here, on first use)."""
    global _CELL_DTYPE
    if _CELL_DTYPE is None:
        import numpy as np
        _CELL_DTYPE = np.dtype({
            "names": ["ring", "chi_hist", "shell_hist", "fam_hist", "word4", "step", "omega12", "pos", "valid",
                      "has_closed", "key", "allocated"],
            "formats": [("u1", 64), ("u1", 64), ("u1", 8), ("u1", 4), ("u1", 4), "<u8", "<u2", "u1", "u1",
                        "u1", "u1", "u1"],
            "offsets": [0, 64, 128, 136, 140, 144, 152, 154, 155, 156, 157, 158],
            "itemsize": 160,
        })
    return _CELL_DTYPE


assert sizeof(Cell) == 160

# per byte: eps_a6, micro_ref ^ eps_b6, family << 6
cdef uint8_t T_EA[256]
cdef uint8_t T_MB[256]
cdef uint8_t T_FAM6[256]
cdef uint8_t T_POP[64]
cdef uint8_t T_KEY[2][64]

def _init_tables():
    cdef int b
    for b in range(256):
        T_EA[b] = law.EPS_A6[b]
        T_MB[b] = law.MR_EB[b]
        T_FAM6[b] = law.FAMILY[b] << 6
    for b in range(64):
        T_POP[b] = law.POPCOUNT6[b]
        T_KEY[0][b] = b
        T_KEY[1][b] = law.POPCOUNT6[b]

# per byte and word position k: ring entry contribution (bytes k..3 get q6, byte k gets
# family << 6) in bits 0..31, omega12 translation contribution in bits 32..43
cdef uint64_t W0[256]
cdef uint64_t W1[256]
cdef uint64_t W2[256]
cdef uint64_t W3[256]
# packed histogram deltas of a ring entry: +1 in byte shell(chi6) / byte family
cdef uint64_t SHD[256]
cdef uint32_t FMD[256]
cdef enum:
    PREFETCH = 8

cdef extern from *:
    void __builtin_prefetch(const void* addr, int rw, int locality) nogil


def _init_word_tables():
    cdef int b, k, e
    cdef uint64_t q, f, tr, rep
    cdef uint64_t* tabs[4]
    tabs[0] = W0
    tabs[1] = W1
    tabs[2] = W2
    tabs[3] = W3
    for k in range(4):
        for b in range(256):
            q = int(law.Q6[b])
            f = int(law.FAMILY[b])
            rep = 0
            for e in range(k, 4):
                rep |= q << (8 * e)
            rep |= (f << 6) << (8 * k)
            if k % 2 == 0:   # even position: u gets micro^eps_b, v gets eps_a
                tr = ((<uint64_t> int(law.MR_EB[b])) << 6) | (<uint64_t> int(law.EPS_A6[b]))
            else:
                tr = ((<uint64_t> int(law.EPS_A6[b])) << 6) | (<uint64_t> int(law.MR_EB[b]))
            tabs[k][b] = rep | (tr << 32)
    for e in range(256):
        k = int(law.POPCOUNT6[e & 63])
        SHD[e] = (<uint64_t> 1) << (8 * k)
        FMD[e] = (<uint32_t> 1) << (8 * (e >> 6))


_init_tables()
_init_word_tables()


cdef class _Core:
    cdef Cell* cells
    cdef uint32_t counts[64]
    cdef uint8_t shift[64]
    cdef int nb
    cdef int pid
    cdef Py_ssize_t cap

    bytes_per_cell = 160

    def _core_init(self, Py_ssize_t capacity, int profile_id):
        cdef Cell* cells = <Cell*> calloc(capacity, sizeof(Cell))
        if cells == NULL:
            raise MemoryError(f"cannot allocate {capacity} cells")
        free(self.cells)
        self.cells = cells
        self.cap = capacity
        self.pid = profile_id
        self.nb = 64 if profile_id == 0 else 7
        memset(self.counts, 0, sizeof(self.counts))
        memset(self.shift, 0, sizeof(self.shift))

    cdef inline void _join(self, int key) noexcept nogil:
        self.counts[key] += 1
        self.shift[key] = 0

    cdef inline void _leave(self, int key) noexcept nogil:
        self.counts[key] -= 1
        self.shift[key] = 0

    def _is_alloc(self, Py_ssize_t cid):
        return self.cells[cid].allocated != 0

    def _first_free(self):
        """The lowest free cell id, -1 when the pool is full."""
        cdef Py_ssize_t i
        for i in range(self.cap):
            if not self.cells[i].allocated:
                return i
        return -1

    def _n_alloc(self):
        cdef Py_ssize_t i, n = 0
        for i in range(self.cap):
            n += self.cells[i].allocated != 0
        return n

    def __dealloc__(self):
        free(self.cells)

    def _cells_np(self):
        """A numpy view of the cells (it must not outlive the pool: callers copy what they keep)."""
        import numpy as np
        return np.frombuffer(<uint8_t[:self.cap * sizeof(Cell)]> <uint8_t*> self.cells, dtype=cell_dtype())

    def _alloc_mask(self):
        return self._cells_np()["allocated"] != 0

    def _core_reset(self, Py_ssize_t cid, int omega12):
        cdef Cell* c = &self.cells[cid]
        if c.allocated:
            self._leave(c.key)
        memset(c, 0, sizeof(Cell))
        c.omega12 = omega12
        c.allocated = 1
        c.key = T_KEY[self.pid][(omega12 >> 6) ^ (omega12 & 63)]
        self._join(c.key)

    def _core_free(self, Py_ssize_t cid):
        cdef Cell* c = &self.cells[cid]
        self._leave(c.key)
        memset(c, 0, sizeof(Cell))

    def _core_counts(self):
        return [self.counts[k] for k in range(self.nb)]

    def _core_weights(self):
        return [self.counts[k] >> self.shift[k] for k in range(self.nb)]

    def _core_decay(self):
        cdef int k
        for k in range(self.nb):
            if self.shift[k] < 32:
                self.shift[k] += 1

    def _core_ingest(self, const uint32_t[::1] ids, const uint8_t[::1] words):
        """ids: n uint32 cell ids; words: their 4n bytes, in order (the API checked the lengths)."""
        cdef Py_ssize_t n = ids.shape[0], i, bad = -1
        cdef uint32_t cid
        with nogil:
            for i in range(n):
                cid = ids[i]
                if cid >= self.cap or not self.cells[cid].allocated:
                    bad = i
                    break
        if bad >= 0:
            cid = ids[bad]
            if cid >= self.cap:
                raise KernelError(f"cell id {cid} out of range 0..{self.cap - 1}")
            raise KernelError(f"cell {cid} is not allocated")
        with nogil:
            self._run(&ids[0], &words[0], n)

    cdef void _run(self, const uint32_t* ids, const uint8_t* words, Py_ssize_t n) noexcept nogil:
        # Whole-word form of the byte cadence (exactly equivalent, see the module docstring):
        # X = W0[b0]^W1[b1]^W2[b2]^W3[b3] packs, in its low 32 bits, the 4 new ring entries
        # (family << 6 | chi-prefix) relative to the starting chi6, and in bits 32..43 the
        # omega12 translation of the word (an even-length word is a pure translation).
        # The ring slot of a word is 4 aligned bytes (pos is 4 * words mod 64).
        cdef Py_ssize_t i
        cdef uint32_t w4, olde, newe, chi0
        cdef uint64_t x, dsh
        cdef uint32_t dfm
        cdef int key, pos, w
        cdef Cell* c
        cdef Cell* cells = self.cells
        cdef const uint8_t* tkey = T_KEY[self.pid]
        cdef Py_ssize_t ahead
        for i in range(n):
            ahead = i + PREFETCH
            if ahead < n:
                c = &cells[ids[ahead]]
                __builtin_prefetch(<char*> c, 1, 3)
                __builtin_prefetch(<char*> c + 64, 1, 3)
                __builtin_prefetch(<char*> c + 128, 1, 3)
            c = &cells[ids[i]]
            memcpy(&w4, words + 4 * i, 4)
            x = W0[w4 & 255] ^ W1[(w4 >> 8) & 255] ^ W2[(w4 >> 16) & 255] ^ W3[w4 >> 24]
            w = c.omega12
            chi0 = ((w >> 6) ^ w) & 63
            newe = (<uint32_t> x) ^ (chi0 * 0x01010101u)
            pos = c.pos
            dsh = SHD[newe & 255] + SHD[(newe >> 8) & 255] + SHD[(newe >> 16) & 255] + SHD[newe >> 24]
            dfm = FMD[newe & 255] + FMD[(newe >> 8) & 255] + FMD[(newe >> 16) & 255] + FMD[newe >> 24]
            if c.valid == 64:
                memcpy(&olde, &c.ring[pos], 4)
                dsh -= SHD[olde & 255] + SHD[(olde >> 8) & 255] + SHD[(olde >> 16) & 255] + SHD[olde >> 24]
                dfm -= FMD[olde & 255] + FMD[(olde >> 8) & 255] + FMD[(olde >> 16) & 255] + FMD[olde >> 24]
                c.chi_hist[olde & 63] -= 1
                c.chi_hist[(olde >> 8) & 63] -= 1
                c.chi_hist[(olde >> 16) & 63] -= 1
                c.chi_hist[(olde >> 24) & 63] -= 1
            else:
                c.valid += 4
            memcpy(&c.ring[pos], &newe, 4)
            c.chi_hist[newe & 63] += 1
            c.chi_hist[(newe >> 8) & 63] += 1
            c.chi_hist[(newe >> 16) & 63] += 1
            c.chi_hist[(newe >> 24) & 63] += 1
            (<uint64_t*> &c.shell_hist[0])[0] += dsh
            (<uint32_t*> &c.fam_hist[0])[0] += dfm
            c.pos = (pos + 4) & 63
            c.omega12 = w ^ <int> (x >> 32)
            c.step += 4
            memcpy(c.word4, &w4, 4)
            c.has_closed = 1
            key = tkey[(newe >> 24) & 63]
            if key != c.key:
                self.counts[c.key] -= 1
                self.shift[c.key] = 0
                self.counts[key] += 1
                self.shift[key] = 0
                c.key = key

    def _row(self, Py_ssize_t cid):
        """One allocated cell's values, as plain Python, for views.record_of."""
        cdef Cell* c = &self.cells[cid]
        w4 = [c.word4[0], c.word4[1], c.word4[2], c.word4[3]] if c.has_closed else [0, 0, 0, 0]
        if c.has_closed:
            o12, e12, _ = law.parity_commitment(w4)
            sig = law.word_signature(w4)
        else:
            o12 = e12 = sig = 0
        return {"omega12": c.omega12, "step": c.step, "has_closed_word": c.has_closed != 0,
                "last_byte": w4[3] if c.has_closed else law.EMPTY_LAST_BYTE, "word4": w4,
                "chi_valid_len": c.valid, "chi_hist64": [c.chi_hist[k] for k in range(64)],
                "shell_hist7": [c.shell_hist[k] for k in range(7)],
                "family_hist4": [c.fam_hist[k] for k in range(4)], "omega_sig": sig,
                "parity_O12": o12, "parity_E12": e12, "parity_bit": 0, "resonance_key": c.key}

    def _column(self, name):
        import numpy as np
        b = self._cells_np()
        if name == "omega12":
            return b["omega12"].astype(np.int32)
        if name == "word4":
            return b["word4"].copy()
        if name == "has_closed_word":
            return b["has_closed"].copy()
        if name == "resonance_key":
            return b["key"].astype(np.uint32)
        raise KeyError(name)

    def _gather(self, ids):
        import numpy as np
        from . import law as lawnp
        sel = self._cells_np()[np.asarray(ids, dtype=np.int64)]
        ring = sel["ring"]
        hc = sel["has_closed"]
        w4 = sel["word4"]
        hcb = hc.astype(bool)
        o12, e12, pb = lawnp.parity_commitments(w4)
        return {
            "allocated": sel["allocated"].copy(),
            "has_closed_word": hc.copy(),
            "omega12": sel["omega12"].astype(np.int32),
            "step": sel["step"].astype(np.uint64),
            "last_byte": np.where(hcb, w4[:, 3], law.EMPTY_LAST_BYTE).astype(np.uint8),
            "word4": w4.copy(),
            "chi_ring64": ring & 63,
            "family_ring64": ring >> 6,
            "chi_ring_pos": sel["pos"].copy(),
            "chi_valid_len": sel["valid"].copy(),
            "chi_hist64": sel["chi_hist"].astype(np.uint16),
            "shell_hist7": sel["shell_hist"][:, :7].astype(np.uint16),
            "family_hist4": sel["fam_hist"].astype(np.uint16),
            "omega_sig": np.where(hcb, lawnp.word_signatures(w4), 0).astype(np.int32),
            "parity_O12": np.where(hcb, o12, 0).astype(np.uint16),
            "parity_E12": np.where(hcb, e12, 0).astype(np.uint16),
            "parity_bit": np.zeros(len(sel), dtype=np.uint8),
            "resonance_key": sel["key"].astype(np.uint32),
        }

    def _core_load(self, st):
        import numpy as np
        self._core_init(self.cap, self.pid)
        b = self._cells_np()
        b["allocated"] = st["allocated"]
        b["has_closed"] = st["has_closed_word"]
        b["omega12"] = st["omega12"].astype(np.uint16)
        b["step"] = st["step"]
        b["word4"] = st["word4"]
        b["ring"] = (st["family_ring64"] << 6) | st["chi_ring64"]
        b["pos"] = st["chi_ring_pos"]
        b["valid"] = st["chi_valid_len"]
        b["chi_hist"] = st["chi_hist64"].astype(np.uint8)
        sh = np.zeros((self.cap, 8), dtype=np.uint8)
        sh[:, :7] = st["shell_hist7"]
        b["shell_hist"] = sh
        b["fam_hist"] = st["family_hist4"].astype(np.uint8)
        b["key"] = st["resonance_key"].astype(np.uint8)
        cdef int k
        counts = np.bincount(st["resonance_key"][st["allocated"] != 0].astype(np.int64), minlength=self.nb)
        for k in range(self.nb):
            self.counts[k] = counts[k]
            self.shift[k] = 0


class CellPool(_Core, PoolAPI):
    """The compiled cell pool. API: see cyext.api.PoolAPI (shared with the Python twin)."""

    def __init__(self, capacity: int = 4096, profile: str = "chirality", ledger=None) -> None:
        self._api_init(capacity, profile, ledger)
