/*
 * scanner._native: the byte-crunching half of the scan planner, on buffers, GIL released.
 *
 * Every function takes objects exporting the buffer protocol (bytes, bytearray, memoryviews of
 * mmaps) and reads them in place: no copy is made of the input, and the GIL is released for the
 * whole loop, so these run on every core next to libyara (which yara-python also runs without
 * the GIL). Results are the same, bit for bit, as the pure-Python versions in scanner/native.py.
 *
 *   zero_pages(buf, page_size) -> bytes        one byte per page: 1 = all zero (last page may be short)
 *   page_hashes(buf, page_size, seed=0) -> bytes   XXH3-64 of each page, little-endian uint64 each
 *   hash128(buf, seed=0, populate=False) -> bytes   XXH3-128 of the whole buffer, 16 bytes big-endian
 *                                              (XXH128_canonical_t, the xxhash package's digest())
 *   block_digests(buf, block, head, seed=0) -> (zero, hashes, heads)   one pass per block: zero
 *                                              flag, XXH3-128 of the block and of its first head bytes
 *   pread_runs(fd, offsets, lengths, dst) -> int    reads run i (file offset offsets[i], lengths[i]
 *                                              bytes; little-endian uint64 arrays) into dst, one run
 *                                              after the other: a VMA's scattered pages gathered from
 *                                              a guest's RAM file in one call (pread: a hole reads as
 *                                              zeros and is not allocated)
 *   writeback(fd) -> None                      write the file's dirty pages back and wait
 *                                              (sync_file_range: no device flush, no journal
 *                                              commit); cleaned pages are write-protected, so the
 *                                              next write through a mapping faults and moves ctime
 *   map_file(fd, offset, length, holes) -> Mapping   a read-only mapping of a file range whose
 *                                              hole pages read as zero without being touched:
 *                                              each whole page inside a (start, end) hole is
 *                                              covered by an anonymous private mapping (the
 *                                              kernel's zero page), so reading it does not
 *                                              allocate it in the file (tmpfs would); the
 *                                              object exports the bytes and unmaps on close()
 *
 * XXH3 comes from xxhash.h (0.8.1, BSD-2-Clause, vendored next to this file from Debian's
 * libxxhash-dev), compiled inline: no library to link, nothing downloaded at build time. It is
 * built three times, for SSE2 (here, the x86-64 baseline), AVX2 (xxh_avx2.c) and AVX-512
 * (xxh_avx512.c); the widest the CPU has is chosen at import (same values, faster). Large mapped inputs are faulted
 * in with one madvise(MADV_POPULATE_READ) instead of a page fault per page.
 */
#define _GNU_SOURCE /* sync_file_range */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdint.h>
#include <limits.h>
#include <errno.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include "xxhash.h"
#include "xxh_avx2.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

static int use_avx2 = 0;   /* set at import: the CPU has AVX2 and the AVX2 build exists */
static int use_avx512 = 0; /* the same for AVX-512 (AVX512F) */

static uint64_t
h64(const void *p, size_t n, uint64_t seed)
{
#ifdef AVSCAN_HAVE_AVX2_BUILD
    if (use_avx512)
        return avscan_avx512_xxh3_64(p, n, seed);
    if (use_avx2)
        return avscan_avx2_xxh3_64(p, n, seed);
#endif
    return XXH3_64bits_withSeed(p, n, (XXH64_hash_t)seed);
}

static void
h128(const void *p, size_t n, uint64_t seed, unsigned char out[16])
{
#ifdef AVSCAN_HAVE_AVX2_BUILD
    if (use_avx512) {
        avscan_avx512_xxh3_128(p, n, seed, out);
        return;
    }
    if (use_avx2) {
        avscan_avx2_xxh3_128(p, n, seed, out);
        return;
    }
#endif
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(p, n, (XXH64_hash_t)seed));
    memcpy(out, c.digest, 16);
}

/* Fault in a mapped buffer in one call instead of one page fault per page (guest RAM files
 * in /dev/shm, dumps in the page cache). Best effort: errors (old kernel, not a mapping) are
 * ignored, the loop then faults pages in as usual. Called with the GIL released. */
static void
prefault(const void *buf, Py_ssize_t len)
{
    static long page = 0;
    if (page == 0)
        page = sysconf(_SC_PAGESIZE);
    if (len < 64 * 1024 || page <= 0)
        return;
    uintptr_t start = (uintptr_t)buf & ~((uintptr_t)page - 1);
    (void)madvise((void *)start, (uintptr_t)buf + (uintptr_t)len - start, MADV_POPULATE_READ);
}

static int
get_buffer(PyObject *obj, Py_buffer *view, int writable)
{
    return PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) | PyBUF_C_CONTIGUOUS);
}

static int
check_page_size(Py_ssize_t page_size)
{
    if (page_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "page_size must be positive");
        return -1;
    }
    return 0;
}

static int
is_zero(const unsigned char *p, size_t n)
{
    /* word-at-a-time OR; the compiler vectorises the inner loop */
    size_t i = 0;
    uint64_t acc = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t w[8];
        memcpy(w, p + i, 64);
        acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
        if (acc)
            return 0;
    }
    for (; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static PyObject *
zero_pages(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t page_size;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "On:zero_pages", &obj, &page_size) || check_page_size(page_size))
        return NULL;
    if (get_buffer(obj, &view, 0) < 0)
        return NULL;
    Py_ssize_t pages = (view.len + page_size - 1) / page_size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, pages);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = view.buf;
    Py_ssize_t len = view.len;
    Py_BEGIN_ALLOW_THREADS
    prefault(src, len);
    for (Py_ssize_t i = 0; i < pages; i++) {
        Py_ssize_t start = i * page_size;
        Py_ssize_t n = len - start < page_size ? len - start : page_size;
        dst[i] = (unsigned char)is_zero(src + start, (size_t)n);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyObject *
page_hashes(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "page_size", "seed", NULL};
    PyObject *obj;
    Py_ssize_t page_size;
    unsigned long long seed = 0;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "On|K:page_hashes", kwlist, &obj, &page_size, &seed)
        || check_page_size(page_size))
        return NULL;
    if (get_buffer(obj, &view, 0) < 0)
        return NULL;
    Py_ssize_t pages = (view.len + page_size - 1) / page_size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, pages * 8);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *src = view.buf;
    Py_ssize_t len = view.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < pages; i++) {
        Py_ssize_t start = i * page_size;
        Py_ssize_t n = len - start < page_size ? len - start : page_size;
        uint64_t h = h64(src + start, (size_t)n, seed);
        for (int b = 0; b < 8; b++)
            dst[i * 8 + b] = (unsigned char)(h >> (8 * b));
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyObject *
hash128(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "seed", "populate", NULL};
    PyObject *obj;
    unsigned long long seed = 0;
    int populate = 0;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|Kp:hash128", kwlist, &obj, &seed, &populate))
        return NULL;
    if (get_buffer(obj, &view, 0) < 0)
        return NULL;
    unsigned char digest[16];
    Py_BEGIN_ALLOW_THREADS
    if (populate)
        prefault(view.buf, view.len);
    h128(view.buf, (size_t)view.len, seed, digest);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)digest, 16);
}

static PyObject *
block_digests(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "block", "head", "seed", NULL};
    PyObject *obj;
    Py_ssize_t block, head;
    unsigned long long seed = 0;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Onn|K:block_digests", kwlist, &obj, &block, &head, &seed)
        || check_page_size(block))
        return NULL;
    if (head < 0) {
        PyErr_SetString(PyExc_ValueError, "head must not be negative");
        return NULL;
    }
    if (get_buffer(obj, &view, 0) < 0)
        return NULL;
    Py_ssize_t n = (view.len + block - 1) / block;
    PyObject *zero = PyBytes_FromStringAndSize(NULL, n);
    PyObject *hashes = PyBytes_FromStringAndSize(NULL, n * 16);
    PyObject *heads = PyBytes_FromStringAndSize(NULL, n * 16);
    if (zero == NULL || hashes == NULL || heads == NULL) {
        Py_XDECREF(zero);
        Py_XDECREF(hashes);
        Py_XDECREF(heads);
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *z = (unsigned char *)PyBytes_AS_STRING(zero);
    unsigned char *h = (unsigned char *)PyBytes_AS_STRING(hashes);
    unsigned char *hd = (unsigned char *)PyBytes_AS_STRING(heads);
    const unsigned char *src = view.buf;
    Py_ssize_t len = view.len;
    Py_BEGIN_ALLOW_THREADS
    prefault(src, len);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t start = i * block;
        Py_ssize_t m = len - start < block ? len - start : block;
        z[i] = (unsigned char)is_zero(src + start, (size_t)m);
        if (z[i]) {
            memset(h + i * 16, 0, 16);
            memset(hd + i * 16, 0, 16);
            continue;
        }
        h128(src + start, (size_t)m, seed, h + i * 16);
        h128(src + start, (size_t)(head < m ? head : m), seed, hd + i * 16);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNN)", zero, hashes, heads);
}

/* -- pread_runs: scattered file runs into one buffer ------------------------------------------ */

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = (v << 8) | p[b];
    return v;
}

static PyObject *
pread_runs(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer offs, lens, dst;
    if (!PyArg_ParseTuple(args, "iy*y*w*:pread_runs", &fd, &offs, &lens, &dst))
        return NULL;
    const char *error = NULL;
    Py_ssize_t count = offs.len / 8, total = 0;
    if (offs.len % 8 || lens.len != offs.len)
        error = "offsets and lengths must be equal arrays of little-endian uint64";
    for (Py_ssize_t i = 0; error == NULL && i < count; i++) {
        uint64_t off = le64((const unsigned char *)offs.buf + 8 * i);
        uint64_t n = le64((const unsigned char *)lens.buf + 8 * i);
        if (off > (uint64_t)LLONG_MAX || n > (uint64_t)(dst.len - total) || off > (uint64_t)LLONG_MAX - n)
            error = "a run does not fit dst or the file offset range";
        else
            total += (Py_ssize_t)n;
    }
    int err = 0;
    long long short_at = -1;
    if (error == NULL) {
        char *d = dst.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count && !err && short_at < 0; i++) {
            long long off = (long long)le64((const unsigned char *)offs.buf + 8 * i);
            size_t n = (size_t)le64((const unsigned char *)lens.buf + 8 * i);
            size_t got = 0;
            while (got < n) {
                ssize_t r = pread(fd, d + got, n - got, (off_t)(off + (long long)got));
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    err = errno;
                    break;
                }
                if (r == 0) {
                    short_at = off + (long long)got;
                    break;
                }
                got += (size_t)r;
            }
            d += n;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&offs);
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (short_at >= 0)
        return PyErr_Format(PyExc_OSError, "file ends at offset %lld", short_at);
    return PyLong_FromSsize_t(total);
}

/* -- writeback: clean a file's dirty pages (see scanner.targets.identity) --------------------- */

static PyObject *
writeback(PyObject *self, PyObject *args)
{
    int fd, rc;
    if (!PyArg_ParseTuple(args, "i:writeback", &fd))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    do {
        rc = sync_file_range(fd, 0, 0,
                             SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    } while (rc != 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* -- map_file: file ranges with their holes left untouched ------------------------------------ */

typedef struct {
    PyObject_HEAD
    char *addr;            /* start of the whole mapping (page aligned), NULL once closed */
    size_t maplen;         /* bytes mapped */
    Py_ssize_t delta;      /* offset of the first requested byte in the mapping */
    Py_ssize_t length;     /* bytes requested */
    Py_ssize_t exports;    /* live buffer views */
} MappingObject;

static void
mapping_unmap(MappingObject *self)
{
    if (self->addr != NULL) {
        munmap(self->addr, self->maplen);
        self->addr = NULL;
    }
}

static void
mapping_dealloc(MappingObject *self)
{
    mapping_unmap(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
mapping_getbuffer(MappingObject *self, Py_buffer *view, int flags)
{
    if (self->addr == NULL) {
        PyErr_SetString(PyExc_ValueError, "mapping is closed");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->addr + self->delta, self->length, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void
mapping_releasebuffer(MappingObject *self, Py_buffer *view)
{
    self->exports--;
}

static PyObject *
mapping_close(MappingObject *self, PyObject *unused)
{
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "cannot close a mapping while views of it exist");
        return NULL;
    }
    mapping_unmap(self);
    Py_RETURN_NONE;
}

static PyObject *
mapping_get_closed(MappingObject *self, void *closure)
{
    return PyBool_FromLong(self->addr == NULL);
}

static Py_ssize_t
mapping_len(MappingObject *self)
{
    return self->addr == NULL ? 0 : self->length;
}

static PyMethodDef mapping_methods[] = {
    {"close", (PyCFunction)mapping_close, METH_NOARGS, "close(): unmap (BufferError while views exist)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"closed", (getter)mapping_get_closed, NULL, "True once unmapped", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyBufferProcs mapping_as_buffer = {
    (getbufferproc)mapping_getbuffer,
    (releasebufferproc)mapping_releasebuffer,
};

static PySequenceMethods mapping_as_sequence = {
    .sq_length = (lenfunc)mapping_len,
};

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "scanner._native.Mapping",
    .tp_basicsize = sizeof(MappingObject),
    .tp_dealloc = (destructor)mapping_dealloc,
    .tp_as_buffer = &mapping_as_buffer,
    .tp_as_sequence = &mapping_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only file mapping whose hole pages are the zero page (see map_file).",
    .tp_methods = mapping_methods,
    .tp_getset = mapping_getset,
};

static PyObject *
map_file(PyObject *self, PyObject *args)
{
    int fd;
    long long offset, length;
    PyObject *holes;
    if (!PyArg_ParseTuple(args, "iLLO:map_file", &fd, &offset, &length, &holes))
        return NULL;
    if (offset < 0 || length <= 0 || offset > LLONG_MAX - length) {
        PyErr_SetString(PyExc_ValueError, "map_file: offset must be >= 0 and length > 0");
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (offset + length > (long long)st.st_size) {
        /* a mapping past the end of the file faults (SIGBUS) when read: refuse it here */
        PyErr_Format(PyExc_ValueError, "map_file: range ends at %lld, past the end of the file (%lld bytes)",
                     offset + length, (long long)st.st_size);
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    PyObject *seq = PySequence_Fast(holes, "map_file: holes must be a sequence of (start, end)");
    if (seq == NULL)
        return NULL;
    long long start = offset - offset % page;
    long long end = offset + length;
    size_t maplen = (size_t)((end - start + page - 1) / page * page);
    char *addr = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, (off_t)start);
    if (addr == MAP_FAILED) {
        Py_DECREF(seq);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long hs, he;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "LL:hole", &hs, &he))
            goto fail;
        /* the pages wholly inside the hole (a hole reaching the end of the file covers the
         * file's last partial page too), clipped to the pages mapped */
        if (he >= (long long)st.st_size)
            he = (long long)st.st_size + page - 1;
        hs = (hs + page - 1) / page * page;
        he = he / page * page;
        if (hs < start)
            hs = start;
        if (he > start + (long long)maplen)
            he = start + (long long)maplen;
        if (he <= hs)
            continue;
        char *at = addr + (hs - start);
        if (mmap(at, (size_t)(he - hs), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != at) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
    }
    Py_DECREF(seq);
    MappingObject *m = PyObject_New(MappingObject, &MappingType);
    if (m == NULL) {
        munmap(addr, maplen);
        return NULL;
    }
    m->addr = addr;
    m->maplen = maplen;
    m->delta = (Py_ssize_t)(offset - start);
    m->length = (Py_ssize_t)length;
    m->exports = 0;
    return (PyObject *)m;
fail:
    munmap(addr, maplen);
    Py_DECREF(seq);
    return NULL;
}

/* The needle byte to look for with memchr: the rarest kind in memory (not zero, not a lowercase
 * letter or space, not other printable ASCII, in that order of preference), first of its kind. */
static Py_ssize_t
anchor_index(const unsigned char *needle, Py_ssize_t n)
{
    Py_ssize_t best = 0;
    int best_score = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char b = needle[i];
        int score = b == 0 ? 0 : (b == ' ' || (b >= 'a' && b <= 'z')) ? 1 : (b >= 0x20 && b < 0x7f) ? 2 : 3;
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

static PyObject *
find_all(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_buffer needle;
    Py_ssize_t limit;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "Oy*n:find_all", &obj, &needle, &limit))
        return NULL;
    if (needle.len <= 0 || limit < 0) {
        PyBuffer_Release(&needle);
        PyErr_SetString(PyExc_ValueError, "needle must not be empty and limit not negative");
        return NULL;
    }
    if (get_buffer(obj, &view, 0) < 0) {
        PyBuffer_Release(&needle);
        return NULL;
    }
    Py_ssize_t cap = limit < 4096 ? limit : 4096, count = 0;
    Py_ssize_t *found = PyMem_RawMalloc(sizeof(Py_ssize_t) * (size_t)(cap ? cap : 1));
    if (found == NULL) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&needle);
        return PyErr_NoMemory();
    }
    int nomem = 0;
    const char *base = view.buf, *end = base + view.len;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *want = needle.buf;
    Py_ssize_t k = anchor_index(want, needle.len), m = needle.len;
    const char *at = base + k; /* next place the anchor byte may be */
    while (count < limit && at + (m - k) <= end) {
        const char *p = memchr(at, want[k], (size_t)(end - at) - (size_t)(m - k - 1));
        if (p == NULL)
            break;
        at = p + 1;
        const char *hit = p - k;
        if (memcmp(hit, want, (size_t)m) != 0)
            continue;
        if (count == cap) {
            Py_ssize_t bigger = cap * 2 < limit ? cap * 2 : limit;
            Py_ssize_t *grown = PyMem_RawRealloc(found, sizeof(Py_ssize_t) * (size_t)bigger);
            if (grown == NULL) {
                nomem = 1;
                break;
            }
            found = grown;
            cap = bigger;
        }
        found[count++] = hit - base;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyBuffer_Release(&needle);
    PyObject *out = nomem ? NULL : PyList_New(count);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        PyObject *n = PyLong_FromSsize_t(found[i]);
        if (n == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, n);
    }
    PyMem_RawFree(found);
    return nomem ? PyErr_NoMemory() : out;
}

static PyMethodDef methods[] = {
    {"zero_pages", zero_pages, METH_VARARGS, "zero_pages(buf, page_size) -> bytes: 1 per all-zero page"},
    {"page_hashes", (PyCFunction)(void (*)(void))page_hashes, METH_VARARGS | METH_KEYWORDS,
     "page_hashes(buf, page_size, seed=0) -> bytes: XXH3-64 per page, little-endian uint64"},
    {"hash128", (PyCFunction)(void (*)(void))hash128, METH_VARARGS | METH_KEYWORDS,
     "hash128(buf, seed=0, populate=False) -> bytes: XXH3-128 canonical (big-endian) digest; "
     "populate: buf is a fresh mapping, fault it in with one madvise first"},
    {"block_digests", (PyCFunction)(void (*)(void))block_digests, METH_VARARGS | METH_KEYWORDS,
     "block_digests(buf, block, head, seed=0) -> (zero, hashes, heads): per block, 1 if all zero; "
     "XXH3-128 of the block and of its first head bytes (16 zero bytes for zero blocks)"},
    {"pread_runs", pread_runs, METH_VARARGS,
     "pread_runs(fd, offsets, lengths, dst) -> int: read each (offset, length) run of fd into dst in turn"},
    {"writeback", writeback, METH_VARARGS,
     "writeback(fd): write the file's dirty pages back and wait (sync_file_range, no device flush)"},
    {"find_all", find_all, METH_VARARGS,
     "find_all(buf, needle, limit) -> list: offsets of needle in buf (overlapping), the first limit of them"},
    {"map_file", map_file, METH_VARARGS,
     "map_file(fd, offset, length, holes) -> Mapping: read-only mapping, whole hole pages read as zero untouched"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "scanner._native",
    "Zero-copy page hashing, zero-page detection and gathering, GIL released (see scanner.native).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&MappingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
#ifdef AVSCAN_HAVE_AVX2_BUILD
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    use_avx512 = __builtin_cpu_supports("avx512f") ? 1 : 0;
#endif
    if (PyModule_AddStringConstant(m, "XXH_VERSION", "0.8.1") < 0
        || PyModule_AddStringConstant(m, "XXH_VECTOR", use_avx512 ? "avx512" : use_avx2 ? "avx2" : "sse2") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
