/* The header-mode shard scan, one pass per record: TFRecord framing and both CRCs, the
 * tf.train.Example wire format, the JPEG frame header and the record's facts, without copying
 * the image.
 *
 * Why C: in Python the scan paid per-record interpreter work plus three passes over every byte
 * (CRC, protobuf's copy of the image, a content hash), and ran at 0.14 of a warm page cache. Here
 * every byte is read once, by the fastest CRC-32C the CPU has (checked at run time: carry-less
 * multiply folding with AVX-512, else three SSE4.2 CRC32 streams side by side, else tables), and
 * the image's own CRC, which the duplicate check uses, falls out of the record CRC instead of
 * costing another pass.
 *
 * The contract with pipeline/data/scan.py, which stays the reference implementation: a record is
 * marked OK only when the Python checker would find nothing wrong with it, and then its facts are
 * bit for bit the ones Python computes. Anything else, a broken rule or merely an encoding this
 * reader does not take on (unknown keys or fields, repeated or unpacked lists, non-minimal
 * varints), is marked CHECK and Python redoes that one record, so every message has one source.
 * Every read is bounds-checked against its enclosing message: garbage is CHECK, never a crash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "_scan.c reads the little-endian TFRecord and protobuf fields with plain loads"
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SCAN_X86 1
#include <immintrin.h>
#endif

/* ---- CRC-32C ------------------------------------------------------------------------------ */

#define POLY 0x82f63b78u /* Castagnoli, bit-reflected */
#define LONG_BLOCK 8192  /* the three-stream loop's block sizes, as in Mark Adler's crc32c.c */
#define SHORT_BLOCK 256

static uint32_t crc_table[8][256];      /* slicing-by-8, for CPUs without SSE4.2 */
static uint32_t x2n_table[64];          /* x^(2^k) mod P */
static uint32_t zeros_long[4][256];     /* shift a CRC register past LONG_BLOCK zero bytes */
static uint32_t zeros_short[4][256];
static uint64_t fold_2048[2], fold_512[2], fold_128[2]; /* x^(D+31), x^(D-33) mod P: fold D bits ahead */

enum { CRC_TABLE, CRC_SSE42, CRC_AVX512 };
static const char *const CRC_IMPL_NAMES[] = {"table", "sse4.2", "avx512"};
static int crc_impl; /* the fastest this CPU runs */

static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* a * b mod P, polynomials in the reflected order (bit 31 is x^0); `a` must not be 0. */
static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t m = (uint32_t)1 << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

/* x^(n * 2^k) mod P (n < 2^60); with k = 3, the operator that appends n zero bytes to a CRC. */
static uint32_t x2nmodp(uint64_t n, unsigned k) {
    uint32_t p = (uint32_t)1 << 31;
    while (n) {
        if (n & 1) p = multmodp(x2n_table[k & 63], p);
        n >>= 1;
        k++;
    }
    return p;
}

/* CRC-32C of A then B, from CRC(A), CRC(B) and the length of B (zlib's crc32_combine). */
static uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
    return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

static void zeros_table(uint32_t table[4][256], uint64_t len) {
    uint32_t op = x2nmodp(len, 3);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) table[k][b] = multmodp(op, b << (8 * k));
}

static inline uint32_t shift_crc(uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^ table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++) crc_table[k][n] = (crc_table[k - 1][n] >> 8) ^ crc_table[0][crc_table[k - 1][n] & 0xff];
    uint32_t p = (uint32_t)1 << 30; /* x^1 */
    x2n_table[0] = p;
    for (int k = 1; k < 64; k++) x2n_table[k] = p = multmodp(p, p);
    zeros_table(zeros_long, LONG_BLOCK);
    zeros_table(zeros_short, SHORT_BLOCK);
    static const uint64_t distances[3] = {2048, 512, 128};
    uint64_t *folds[3] = {fold_2048, fold_512, fold_128};
    for (int i = 0; i < 3; i++) {
        folds[i][0] = x2nmodp(distances[i] + 31, 0);
        folds[i][1] = x2nmodp(distances[i] - 33, 0);
    }
#ifdef SCAN_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) crc_impl = CRC_SSE42;
    if (crc_impl == CRC_SSE42 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") &&
        __builtin_cpu_supports("pclmul"))
        crc_impl = CRC_AVX512;
#endif
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
        n--;
    }
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w = load64(p) ^ crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^ crc_table[5][(w >> 16) & 0xff] ^
              crc_table[4][(w >> 24) & 0xff] ^ crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#ifdef SCAN_X86
/* The CRC32 instruction has a latency of 3 cycles and a throughput of 1: three independent
 * streams over three adjacent blocks keep it busy, then the blocks' CRCs are joined by shifting. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t crc0 = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        crc0 = _mm_crc32_u8((uint32_t)crc0, *p++);
        n--;
    }
    static const size_t blocks[2] = {LONG_BLOCK, SHORT_BLOCK};
    for (int b = 0; b < 2; b++) {
        size_t block = blocks[b];
        while (n >= 3 * block) {
            uint64_t crc1 = 0, crc2 = 0;
            const uint8_t *end = p + block;
            do {
                crc0 = _mm_crc32_u64(crc0, load64(p));
                crc1 = _mm_crc32_u64(crc1, load64(p + block));
                crc2 = _mm_crc32_u64(crc2, load64(p + 2 * block));
                p += 8;
            } while (p < end);
            uint32_t(*zeros)[256] = b == 0 ? zeros_long : zeros_short;
            crc0 = shift_crc(zeros, (uint32_t)crc0) ^ crc1;
            crc0 = shift_crc(zeros, (uint32_t)crc0) ^ crc2;
            p += 2 * block;
            n -= 3 * block;
        }
    }
    for (; n >= 8; p += 8, n -= 8) crc0 = _mm_crc32_u64(crc0, load64(p));
    while (n--) crc0 = _mm_crc32_u8((uint32_t)crc0, *p++);
    return ~(uint32_t)crc0;
}

/* Carry-less folding (Intel's "Fast CRC Computation Using PCLMULQDQ"), 64 bytes per instruction:
 * a 128-bit lane L = H:Lo (H the first 8 bytes) is congruent, D bits further on, to
 * H * x^(D+64) + Lo * x^D mod P. In the bit-reflected order the products land 33 bits off, hence
 * the constants x^(D+31) and x^(D-33). Four 512-bit accumulators hide the multiplier's latency;
 * the one 128-bit lane left at the end is reduced by the CRC32 instruction itself. */
#define AVX512 __attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2")))

AVX512 static inline __m512i fold512(__m512i x, __m512i k, __m512i data) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), data,
                                     0x96);
}

AVX512 static inline __m128i fold128(__m128i x, __m128i k, __m128i data) {
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), data);
}

AVX512 static uint32_t crc32c_avx512(uint32_t crc, const uint8_t *p, size_t n) {
    if (n < 256) return crc32c_sse42(crc, p, n);
    __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_2048[1], (long long)fold_2048[0]));
    __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    __m512i x1 = _mm512_loadu_si512(p + 64), x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192);
    for (p += 256, n -= 256; n >= 256; p += 256, n -= 256) {
        x0 = fold512(x0, k, _mm512_loadu_si512(p));
        x1 = fold512(x1, k, _mm512_loadu_si512(p + 64));
        x2 = fold512(x2, k, _mm512_loadu_si512(p + 128));
        x3 = fold512(x3, k, _mm512_loadu_si512(p + 192));
    }
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_512[1], (long long)fold_512[0]));
    x1 = fold512(x0, k, x1);
    x2 = fold512(x1, k, x2);
    x3 = fold512(x2, k, x3);
    __m128i k128 = _mm_set_epi64x((long long)fold_128[1], (long long)fold_128[0]);
    __m128i v = _mm512_extracti32x4_epi32(x3, 0);
    v = fold128(v, k128, _mm512_extracti32x4_epi32(x3, 1));
    v = fold128(v, k128, _mm512_extracti32x4_epi32(x3, 2));
    v = fold128(v, k128, _mm512_extracti32x4_epi32(x3, 3));
    for (; n >= 16; p += 16, n -= 16) v = fold128(v, k128, _mm_loadu_si128((const __m128i *)p));
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(v));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(v, 1));
    for (; n >= 8; p += 8, n -= 8) c = _mm_crc32_u64(c, load64(p));
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

static uint32_t crc32c_with(int impl, uint32_t crc, const uint8_t *p, size_t n) {
#ifdef SCAN_X86
    if (impl == CRC_AVX512) return crc32c_avx512(crc, p, n);
    if (impl == CRC_SSE42) return crc32c_sse42(crc, p, n);
#endif
    return crc32c_table(crc, p, n);
}

/* CRC-32C of p[0:n] continued from `crc` (the CRC of what came before; 0 to start). */
static inline uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) { return crc32c_with(crc_impl, crc, p, n); }

/* TFRecord stores CRCs masked: rotated right by 15 bits, plus a constant. */
static inline uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- the facts of one record -------------------------------------------------------------- */

/* scan.py builds its numpy dtype from RECORD_FIELDS: every field is 8 bytes, so there is no padding. */
typedef struct {
    int64_t status, index, offset, size, pos; /* pos: where the frame starts in the buffer */
    int64_t label, height, width, num_boxes;
    double jpeg_height, jpeg_width;
    double box_xmin_min, box_ymin_min, box_xmax_max, box_ymax_max, box_w_min, box_h_min;
    uint64_t content_hash;
    int64_t image_pos, image_len, synset_pos, synset_len; /* in the buffer */
} record_t;

static const char *const RECORD_FIELDS[] = {
    "status:i8", "index:i8", "offset:i8", "size:i8", "pos:i8", "label:i8", "height:i8", "width:i8",
    "num_boxes:i8", "jpeg_height:f8", "jpeg_width:f8", "box_xmin_min:f8", "box_ymin_min:f8", "box_xmax_max:f8",
    "box_ymax_max:f8", "box_w_min:f8", "box_h_min:f8", "content_hash:u8", "image_pos:i8", "image_len:i8",
    "synset_pos:i8", "synset_len:i8",
};

enum { OK = 0, CHECK = 1, DATA_CRC = 2, FATAL = 3 };

/* The content fingerprint: the image's CRC-32C (high half) and a CRC of its length, first and last
 * EDGE bytes (low half). Duplicates are confirmed on the bytes, so this only has to make false
 * candidates rare; scan.content_hash is the same function in Python. */
#define EDGE 4096

static uint64_t fingerprint(uint32_t image_crc, const uint8_t *img, size_t n) {
    uint8_t len8[8];
    uint64_t n64 = n;
    memcpy(len8, &n64, 8);
    uint32_t low = crc32c(0, len8, 8);
    if (n <= 2 * EDGE) {
        low = crc32c(low, img, n);
    } else {
        low = crc32c(low, img, EDGE);
        low = crc32c(low, img + n - EDGE, EDGE);
    }
    return (uint64_t)image_crc << 32 | low;
}

/* ---- tf.train.Example, read in place ------------------------------------------------------ */

/* The keys in format.FEATURES order; `kind` is the Feature field number of the expected list
 * (bytes_list 1, float_list 2, int64_list 3). scan.py checks this table against format.py. */
enum { ENCODED, HEIGHT, WIDTH, CHANNELS, COLORSPACE, FORMAT, FILENAME, LABEL, SYNSET, TEXT,
       XMIN, YMIN, XMAX, YMAX, BOX_LABEL, NFEATURES };
enum { NONE = 0, BYTES = 1, FLOAT = 2, INT64 = 3 };
static const struct {
    const char *key;
    int kind, scalar;
} FEATURES[NFEATURES] = {
    {"image/encoded", BYTES, 1},           {"image/height", INT64, 1},
    {"image/width", INT64, 1},             {"image/channels", INT64, 1},
    {"image/colorspace", BYTES, 1},        {"image/format", BYTES, 1},
    {"image/filename", BYTES, 1},          {"image/class/label", INT64, 1},
    {"image/class/synset", BYTES, 1},      {"image/class/text", BYTES, 1},
    {"image/object/bbox/xmin", FLOAT, 0},  {"image/object/bbox/ymin", FLOAT, 0},
    {"image/object/bbox/xmax", FLOAT, 0},  {"image/object/bbox/ymax", FLOAT, 0},
    {"image/object/bbox/label", INT64, 0},
};
#define CHANNELS_VALUE 3
static const char COLORSPACE_VALUE[] = "RGB";
static const char FORMAT_VALUE[] = "JPEG";

typedef struct {
    const uint8_t *p, *end;
} span_t;

typedef struct {
    int seen, kind;
    span_t list;   /* the BytesList/FloatList/Int64List message */
    span_t values; /* bytes: the first value; float: the packed floats; int64: the packed varints */
    int64_t count;
} feature_t;

/* A minimal varint of at most 10 bytes (what any serializer writes); 0 for anything else. */
static int varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0; i < 10 && p < end; i++) {
        uint8_t b = *p++;
        if (i == 9 && b > 1) return 0;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0) return 0;
            *pp = p;
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* A length-delimited field body inside [*pp, end). */
static int delimited(const uint8_t **pp, const uint8_t *end, span_t *out) {
    uint64_t len;
    if (!varint(pp, end, &len) || len > (uint64_t)(end - *pp)) return 0;
    out->p = *pp;
    out->end = *pp + len;
    *pp = out->end;
    return 1;
}

/* The list's values, accepting only the packed single run TensorFlow writes for numbers. */
static int read_list(feature_t *f) {
    const uint8_t *p = f->list.p, *end = f->list.end;
    f->count = 0;
    f->values.p = f->values.end = p;
    if (f->kind == BYTES) {
        while (p < end) {
            span_t v;
            if (*p++ != 0x0a || !delimited(&p, end, &v)) return 0;
            if (f->count++ == 0) f->values = v;
        }
        return 1;
    }
    if (p == end) return 1;
    if (*p++ != 0x0a || !delimited(&p, end, &f->values) || p != end) return 0;
    if (f->kind == FLOAT) {
        size_t n = (size_t)(f->values.end - f->values.p);
        if (n % 4) return 0;
        f->count = (int64_t)(n / 4);
        return 1;
    }
    for (const uint8_t *q = f->values.p; q < f->values.end; f->count++) {
        uint64_t v;
        if (!varint(&q, f->values.end, &v)) return 0;
    }
    return 1;
}

static size_t key_length[NFEATURES];

static int feature_index(span_t key) {
    size_t n = (size_t)(key.end - key.p);
    for (int i = 0; i < NFEATURES; i++)
        if (key_length[i] == n && memcmp(FEATURES[i].key, key.p, n) == 0) return i;
    return -1;
}

/* One map entry of Features.feature: key (1) and value (2), each at most once. */
static int read_entry(const uint8_t *p, const uint8_t *end, feature_t *features) {
    span_t key = {NULL, NULL}, value = {NULL, NULL};
    while (p < end) {
        uint8_t tag = *p++;
        if (tag == 0x0a && !key.p) {
            if (!delimited(&p, end, &key)) return 0;
        } else if (tag == 0x12 && !value.p) {
            if (!delimited(&p, end, &value)) return 0;
        } else {
            return 0;
        }
    }
    if (!key.p) return 0;
    int i = feature_index(key);
    if (i < 0 || features[i].seen) return 0; /* an unknown key, or the same key twice (last one wins) */
    feature_t *f = &features[i];
    f->seen = 1;
    if (value.p && value.p < value.end) { /* a Feature: one of bytes_list, float_list, int64_list */
        p = value.p;
        uint8_t tag = *p++;
        if (tag != 0x0a && tag != 0x12 && tag != 0x1a) return 0;
        if (!delimited(&p, value.end, &f->list) || p != value.end) return 0;
        f->kind = tag >> 3;
        return read_list(f);
    }
    return 1;
}

/* Example { Features features = 1 } and Features { map<string, Feature> feature = 1 }. */
static int read_example(const uint8_t *p, const uint8_t *end, feature_t *features) {
    span_t body = {NULL, NULL};
    memset(features, 0, NFEATURES * sizeof *features);
    while (p < end) {
        if (*p++ != 0x0a || body.p || !delimited(&p, end, &body)) return 0;
    }
    if (!body.p) return 0;
    for (p = body.p; p < body.end;) {
        span_t entry;
        if (*p++ != 0x0a || !delimited(&p, body.end, &entry)) return 0;
        if (!read_entry(entry.p, entry.end, features)) return 0;
    }
    return 1;
}

static int64_t int64_value(const feature_t *f) {
    const uint8_t *p = f->values.p;
    uint64_t v = 0;
    varint(&p, f->values.end, &v); /* already validated by read_list */
    return (int64_t)v;
}

static double float_at(const feature_t *f, int64_t i) {
    uint32_t bits = load32(f->values.p + 4 * i);
    float v;
    memcpy(&v, &bits, 4);
    return (double)v;
}

static int bytes_equal(const feature_t *f, const char *s) {
    size_t n = strlen(s);
    return (size_t)(f->values.end - f->values.p) == n && memcmp(f->values.p, s, n) == 0;
}

/* ---- JPEG: jpeg.read_jpeg_header and scan._undecodable, success path only -------------------- */

/* What TensorFlow's decoder takes, as far as a header shows it (jpeg.py's DECODABLE_* and MAX_*). */
#define JPEG_PRECISION 8
#define JPEG_MAX_DIMENSION 65500
#define JPEG_MAX_DECODED_BYTES ((int64_t)1 << 29)
static const uint8_t JPEG_PROCESSES[] = {0xc0, 0xc1, 0xc2, 0xc9, 0xca};

static int decodable_process(uint8_t marker) {
    for (size_t i = 0; i < sizeof JPEG_PROCESSES; i++)
        if (JPEG_PROCESSES[i] == marker) return 1;
    return 0;
}

/* 1 with the frame's size when the first start-of-frame is one TensorFlow decodes and scan data
 * follows the first start-of-scan header; 0 for anything else, which Python then names. */
static int jpeg_size(const uint8_t *d, size_t n, int64_t *height, int64_t *width) {
    if (n < 2 || d[0] != 0xff || d[1] != 0xd8) return 0;
    size_t pos = 2;
    int framed = 0;
    for (;;) {
        if (pos >= n || d[pos] != 0xff) return 0;
        while (pos < n && d[pos] == 0xff) pos++;
        if (pos >= n) return 0;
        uint8_t marker = d[pos++];
        if (marker == 0xd9 && framed) return 0;                              /* the end, before any scan */
        if ((marker >= 0xd0 && marker <= 0xd9) || marker == 0x01) continue; /* no length field */
        if (n - pos < 2) return 0;
        size_t length = (size_t)d[pos] << 8 | d[pos + 1];
        if (length < 2 || length > n - pos) return 0;
        if (marker == 0xda) { /* scan data must follow: not nothing, not a marker (0xFF is stuffed as FF 00) */
            size_t end = pos + length;
            return framed && end < n && !(d[end] == 0xff && (end + 1 >= n || d[end + 1] != 0x00));
        }
        int sof = marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
        if (sof && !framed) {
            if (length - 2 < 6) return 0;
            const uint8_t *body = d + pos + 2;
            int64_t h = (int64_t)body[1] << 8 | body[2], w = (int64_t)body[3] << 8 | body[4];
            if (body[0] != JPEG_PRECISION || !decodable_process(marker) || h < 1 || h > JPEG_MAX_DIMENSION || w < 1 ||
                w > JPEG_MAX_DIMENSION || h * w * 3 >= JPEG_MAX_DECODED_BYTES)
                return 0;
            *height = h;
            *width = w;
            framed = 1;
        }
        pos += length;
    }
}

/* ---- one record ----------------------------------------------------------------------------- */

/* As Python's min() and max(): the first of equal values stays (it tells -0.0 from 0.0). */
static void keep_min(double v, double *lo, int first) {
    if (first || v < *lo) *lo = v;
}
static void keep_max(double v, double *hi, int first) {
    if (first || v > *hi) *hi = v;
}

/* The record rules (scan._check_record) for one frame's data: OK with the facts filled in, or
 * CHECK. `image` is set whenever the image was located, so the CRC can be split around it. */
static int examine(const uint8_t *d, size_t n, record_t *r, span_t *image) {
    feature_t f[NFEATURES];
    image->p = image->end = NULL;
    if (n > INT32_MAX || !read_example(d, d + n, f)) return CHECK;
    for (int i = 0; i < NFEATURES; i++) {
        if (FEATURES[i].scalar ? f[i].kind != FEATURES[i].kind || f[i].count != 1
                               : f[i].kind != NONE && f[i].kind != FEATURES[i].kind)
            return CHECK;
    }
    *image = f[ENCODED].values;
    if (int64_value(&f[CHANNELS]) != CHANNELS_VALUE || !bytes_equal(&f[COLORSPACE], COLORSPACE_VALUE) ||
        !bytes_equal(&f[FORMAT], FORMAT_VALUE))
        return CHECK;
    int64_t label = int64_value(&f[LABEL]), boxes = f[XMIN].count;
    if (f[YMIN].count != boxes || f[XMAX].count != boxes || f[YMAX].count != boxes) return CHECK;
    if (f[BOX_LABEL].count) {
        if (f[BOX_LABEL].count != boxes) return CHECK;
        for (const uint8_t *q = f[BOX_LABEL].values.p; q < f[BOX_LABEL].values.end;) {
            uint64_t v;
            if (!varint(&q, f[BOX_LABEL].values.end, &v) || (int64_t)v != label) return CHECK;
        }
    }
    int64_t jpeg_h = 0, jpeg_w = 0;
    if (!jpeg_size(image->p, (size_t)(image->end - image->p), &jpeg_h, &jpeg_w)) return CHECK;

    double nan = NAN;
    r->box_xmin_min = r->box_ymin_min = r->box_xmax_max = r->box_ymax_max = r->box_w_min = r->box_h_min = nan;
    for (int64_t i = 0; i < boxes; i++) {
        double x0 = float_at(&f[XMIN], i), y0 = float_at(&f[YMIN], i);
        double x1 = float_at(&f[XMAX], i), y1 = float_at(&f[YMAX], i);
        if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) return CHECK;
        keep_min(x0, &r->box_xmin_min, i == 0);
        keep_min(y0, &r->box_ymin_min, i == 0);
        keep_max(x1, &r->box_xmax_max, i == 0);
        keep_max(y1, &r->box_ymax_max, i == 0);
        keep_min(x1 - x0, &r->box_w_min, i == 0);
        keep_min(y1 - y0, &r->box_h_min, i == 0);
    }
    r->label = label;
    r->height = int64_value(&f[HEIGHT]);
    r->width = int64_value(&f[WIDTH]);
    r->num_boxes = boxes;
    r->jpeg_height = (double)jpeg_h;
    r->jpeg_width = (double)jpeg_w;
    r->synset_pos = f[SYNSET].values.p - d;
    r->synset_len = f[SYNSET].values.end - f[SYNSET].values.p;
    return OK;
}

/* ---- the frames of a buffer ----------------------------------------------------------------- */

typedef struct {
    record_t *v;
    size_t n, cap;
} records_t;

static record_t *push(records_t *rs) {
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? 2 * rs->cap : 256;
        record_t *v = realloc(rs->v, cap * sizeof *v);
        if (!v) return NULL;
        rs->v = v;
        rs->cap = cap;
    }
    record_t *r = &rs->v[rs->n++];
    memset(r, 0, sizeof *r);
    return r;
}

/* Walk the whole frames in buf[0:filled], which holds the file from `base` on. Stops at a frame
 * that is not all in the buffer (*need says how many bytes it takes), at a fatal framing error
 * (recorded as FATAL; Python reads on from there) or at the end of the file (*done). Returns 0,
 * or -1 when out of memory. */
static int scan_frames(const uint8_t *buf, size_t filled, int64_t base, int64_t file_size, int64_t index,
                       records_t *rs, size_t *consumed, size_t *need, int *done) {
    size_t pos = 0;
    *need = 0;
    *done = 0;
    for (;; index++) {
        uint64_t remaining = (uint64_t)(file_size - base) - pos; /* file bytes from this frame on */
        size_t avail = filled - pos;
        if (remaining == 0) {
            *done = 1;
            break;
        }
        int fatal = 0;
        uint64_t length = 0;
        if (avail < 12) {
            if (avail < remaining) { *need = 12; break; }
            fatal = 1; /* truncated frame header */
        } else {
            length = load64(buf + pos);
            fatal = masked(crc32c(0, buf + pos, 8)) != load32(buf + pos + 8) || remaining < 16 || length > remaining - 16;
        }
        record_t *r = push(rs);
        if (!r) return -1;
        r->index = index;
        r->offset = base + (int64_t)pos;
        r->pos = (int64_t)pos;
        if (fatal) {
            r->status = FATAL;
            *done = 1;
            break;
        }
        size_t size = (size_t)length + 16;
        if (size > avail) {
            rs->n--;
            *need = size;
            break;
        }
        r->size = (int64_t)size;
        const uint8_t *d = buf + pos + 12;
        span_t image;
        r->status = examine(d, (size_t)length, r, &image);
        uint32_t crc, image_crc = 0;
        if (image.p) { /* data = prefix, image, suffix: the image's own CRC comes for free */
            crc = crc32c(0, d, (size_t)(image.p - d));
            image_crc = crc32c(0, image.p, (size_t)(image.end - image.p));
            crc = crc32c_combine(crc, image_crc, (uint64_t)(image.end - image.p));
            crc = crc32c(crc, image.end, (size_t)(d + length - image.end));
        } else {
            crc = crc32c(0, d, (size_t)length);
        }
        if (masked(crc) != load32(d + length)) {
            r->status = DATA_CRC;
        } else if (r->status == OK) {
            r->image_pos = image.p - buf;
            r->image_len = image.end - image.p;
            r->synset_pos += d - buf;
            r->content_hash = fingerprint(image_crc, image.p, (size_t)r->image_len);
        }
        pos += size;
    }
    *consumed = pos;
    return 0;
}

/* ---- Python -------------------------------------------------------------------------------- */

static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long base, file_size, index;
    if (!PyArg_ParseTuple(args, "y*LLL:scan", &view, &base, &file_size, &index)) return NULL;
    if (base < 0 || file_size < base || index < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan: need 0 <= base <= file_size and index >= 0");
        return NULL;
    }
    size_t filled = (size_t)view.len;
    if ((uint64_t)filled > (uint64_t)(file_size - base)) filled = (size_t)(file_size - base);
    records_t rs = {NULL, 0, 0};
    size_t consumed = 0, need = 0, flagged = 0;
    int done = 0, failed;
    Py_BEGIN_ALLOW_THREADS
    failed = scan_frames(view.buf, filled, base, file_size, index, &rs, &consumed, &need, &done);
    Py_END_ALLOW_THREADS
    PyObject *raw = NULL, *synsets = NULL, *result = NULL;
    if (failed) {
        PyErr_NoMemory();
        goto out;
    }
    if (!(synsets = PyList_New((Py_ssize_t)rs.n))) goto out;
    for (size_t i = 0; i < rs.n; i++) {
        const record_t *r = &rs.v[i];
        flagged += r->status != OK;
        PyObject *s = r->status == OK
                          ? PyUnicode_DecodeUTF8((const char *)view.buf + r->synset_pos, r->synset_len, "replace")
                          : Py_NewRef(Py_None);
        if (!s) goto out;
        PyList_SET_ITEM(synsets, (Py_ssize_t)i, s);
    }
    if (!(raw = PyBytes_FromStringAndSize((const char *)rs.v, (Py_ssize_t)(rs.n * sizeof(record_t))))) goto out;
    result = Py_BuildValue("(OOnnOn)", raw, synsets, (Py_ssize_t)consumed, (Py_ssize_t)need, done ? Py_True : Py_False,
                           (Py_ssize_t)flagged);
out:
    Py_XDECREF(raw);
    Py_XDECREF(synsets);
    free(rs.v);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *py_crc32c(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "crc", "impl", NULL};
    Py_buffer view;
    unsigned int crc = 0;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|Iz:crc32c", kwlist, &view, &crc, &name)) return NULL;
    int impl = crc_impl;
    if (name) {
        for (impl = crc_impl; impl >= 0 && strcmp(name, CRC_IMPL_NAMES[impl]) != 0; impl--) {}
        if (impl < 0) {
            PyBuffer_Release(&view);
            return PyErr_Format(PyExc_ValueError, "crc32c: no %s implementation on this CPU", name);
        }
    }
    uint32_t value = crc32c_with(impl, crc, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(value);
}

static PyObject *py_crc32c_combine(PyObject *self, PyObject *args) {
    unsigned int a, b;
    unsigned long long len_b;
    if (!PyArg_ParseTuple(args, "IIK:crc32c_combine", &a, &b, &len_b)) return NULL;
    return PyLong_FromUnsignedLong(crc32c_combine(a, b, len_b));
}

static PyMethodDef methods[] = {
    {"scan", py_scan, METH_VARARGS,
     "scan(buffer, base, file_size, index) -> (records, synsets, consumed, need, done, flagged)\n\n"
     "Check the whole frames in `buffer`, which holds a TFRecord file from byte `base` on; `index`\n"
     "is the record index of its first frame. See pipeline/data/scan.py."},
    {"crc32c", (PyCFunction)(void (*)(void))py_crc32c, METH_VARARGS | METH_KEYWORDS,
     "crc32c(data, crc=0, impl=None) -> int: CRC-32C of data, continuing from crc; impl one of CRC_IMPLS."},
    {"crc32c_combine", py_crc32c_combine, METH_VARARGS,
     "crc32c_combine(crc_a, crc_b, len_b) -> int: the CRC-32C of A then B."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_scan", .m_doc = "The native header-mode shard scan.", .m_size = -1, .m_methods = methods,
};

/* What this CPU runs, slowest first: the last one is what the scan uses. */
static PyObject *crc_impls(void) {
    PyObject *t = PyTuple_New(crc_impl + 1);
    for (int i = 0; t && i <= crc_impl; i++) {
        PyObject *s = PyUnicode_FromString(CRC_IMPL_NAMES[i]);
        if (!s) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* (precision, processes, max dimension, max decoded bytes): scan.py checks them against jpeg.py. */
static PyObject *jpeg_limits(void) {
    PyObject *processes = PyTuple_New(sizeof JPEG_PROCESSES);
    for (size_t i = 0; processes && i < sizeof JPEG_PROCESSES; i++) {
        PyObject *v = PyLong_FromLong(JPEG_PROCESSES[i]);
        if (!v) {
            Py_CLEAR(processes);
            break;
        }
        PyTuple_SET_ITEM(processes, (Py_ssize_t)i, v);
    }
    if (!processes) return NULL;
    return Py_BuildValue("(iNiL)", JPEG_PRECISION, processes, JPEG_MAX_DIMENSION, (long long)JPEG_MAX_DECODED_BYTES);
}

PyMODINIT_FUNC PyInit__scan(void) {
    crc_init();
    for (int i = 0; i < NFEATURES; i++) key_length[i] = strlen(FEATURES[i].key);
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *fields = PyTuple_New(sizeof RECORD_FIELDS / sizeof *RECORD_FIELDS);
    PyObject *features = PyTuple_New(NFEATURES);
    if (!fields || !features) goto fail;
    for (size_t i = 0; i < sizeof RECORD_FIELDS / sizeof *RECORD_FIELDS; i++) {
        PyObject *s = PyUnicode_FromString(RECORD_FIELDS[i]);
        if (!s) goto fail;
        PyTuple_SET_ITEM(fields, (Py_ssize_t)i, s);
    }
    static const char *const dtypes[] = {"", "bytes", "float", "int64"};
    for (int i = 0; i < NFEATURES; i++) {
        PyObject *t = Py_BuildValue("(sss)", FEATURES[i].key, dtypes[FEATURES[i].kind],
                                    FEATURES[i].scalar ? "scalar" : "list");
        if (!t) goto fail;
        PyTuple_SET_ITEM(features, i, t);
    }
    if (PyModule_AddObject(m, "RECORD_FIELDS", fields) < 0) goto fail;
    fields = NULL;
    if (PyModule_AddObject(m, "FEATURES", features) < 0) goto fail;
    features = NULL;
    if (PyModule_AddObject(m, "CONSTANTS", Py_BuildValue("(iy#y#)", CHANNELS_VALUE, COLORSPACE_VALUE,
                                                         (Py_ssize_t)strlen(COLORSPACE_VALUE), FORMAT_VALUE,
                                                         (Py_ssize_t)strlen(FORMAT_VALUE))) < 0 ||
        PyModule_AddIntConstant(m, "RECORD_SIZE", sizeof(record_t)) < 0 ||
        PyModule_AddIntConstant(m, "EDGE", EDGE) < 0 || PyModule_AddIntConstant(m, "OK", OK) < 0 ||
        PyModule_AddIntConstant(m, "CHECK", CHECK) < 0 || PyModule_AddIntConstant(m, "DATA_CRC", DATA_CRC) < 0 ||
        PyModule_AddIntConstant(m, "FATAL", FATAL) < 0 ||
        PyModule_AddObject(m, "CRC_IMPLS", crc_impls()) < 0 ||
        PyModule_AddObject(m, "JPEG_LIMITS", jpeg_limits()) < 0)
        goto fail;
    return m;
fail:
    Py_XDECREF(fields);
    Py_XDECREF(features);
    Py_DECREF(m);
    return NULL;
}
