/* Decode attention over a slotted bfloat16 KV cache: one query token per sequence.
 *
 * For each (sequence b, kv head h) the keys and values of positions 0..lens[b]-1 are
 * read once, for all G = heads / kv_heads query heads that share them (grouped-query
 * attention), converted from bfloat16 to float32 on the fly; scores, softmax and the
 * weighted sum are computed in float32. Queries come in float32 (after rotary), outputs
 * go out in float32.
 *
 * Layouts (contiguous): q (B, H, D); k, v (slots, KH, cap, D) as uint16 bfloat16 bits;
 * lens (B,) int64; out (B, H, D). Parallel over (b, h) with OpenMP (torch's runtime,
 * loaded first, is the one that runs it). With AVX-512 and D a multiple of 16 the rows
 * are processed 16 floats at a time; otherwise a portable loop.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

enum { MAX_G = 16, MAX_D = 256 };

static inline float bf16_to_float(uint16_t x) {
    uint32_t u = ((uint32_t)x) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* s[g * L + j] = exp(score - max) for each query head g; returns nothing, fills sum[g]. */
static void softmax_rows(float *s, int64_t G, int64_t L, float *sum) {
    for (int64_t g = 0; g < G; ++g) {
        float mx = -FLT_MAX, total = 0.f;
        for (int64_t j = 0; j < L; ++j) mx = s[g * L + j] > mx ? s[g * L + j] : mx;
        for (int64_t j = 0; j < L; ++j) {
            float e = expf(s[g * L + j] - mx);
            s[g * L + j] = e;
            total += e;
        }
        sum[g] = total;
    }
}

#ifdef __AVX512F__
static inline __m512 load16(const uint16_t *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* exp(x) for x <= 0: 2^(x log2 e) as 2^n * 2^f, f in [-0.5, 0.5], 2^f by a degree-6
 * polynomial (relative error about 2e-7, as expf's float rounding). */
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f));
    __m512 p = _mm512_set1_ps(1.f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
}

static void softmax_avx512(float *s, int64_t G, int64_t L, float *sum) {
    for (int64_t g = 0; g < G; ++g) {
        float *r = s + g * L;
        __m512 m = _mm512_set1_ps(-FLT_MAX);
        int64_t j = 0;
        for (; j + 16 <= L; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(r + j));
        float mx = _mm512_reduce_max_ps(m);
        for (int64_t i = j; i < L; ++i) mx = r[i] > mx ? r[i] : mx;
        __m512 vm = _mm512_set1_ps(mx), acc = _mm512_setzero_ps();
        for (j = 0; j + 16 <= L; j += 16) {
            __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(r + j), vm));
            _mm512_storeu_ps(r + j, e);
            acc = _mm512_add_ps(acc, e);
        }
        if (j < L) {
            __mmask16 k = (__mmask16)((1u << (L - j)) - 1);
            __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, r + j), vm));
            _mm512_mask_storeu_ps(r + j, k, e);
            acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
        }
        sum[g] = _mm512_reduce_add_ps(acc);
    }
}

static void one_head_avx512(const float *qb, const uint16_t *kb, const uint16_t *vb, float *ob, float *s,
                            int64_t G, int64_t L, int64_t D, float scale) {
    const int64_t C = D / 16;
    __m512 qv[MAX_G * MAX_D / 16], acc[MAX_G * MAX_D / 16], row[MAX_D / 16];
    float sum[MAX_G];
    for (int64_t i = 0; i < G * C; ++i) {
        qv[i] = _mm512_mul_ps(_mm512_loadu_ps(qb + i * 16), _mm512_set1_ps(scale));
        acc[i] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < L; ++j) {
        for (int64_t c = 0; c < C; ++c) row[c] = load16(kb + j * D + c * 16);
        for (int64_t g = 0; g < G; ++g) {
            __m512 a = _mm512_mul_ps(qv[g * C], row[0]);
            for (int64_t c = 1; c < C; ++c) a = _mm512_fmadd_ps(qv[g * C + c], row[c], a);
            s[g * L + j] = _mm512_reduce_add_ps(a);
        }
    }
    softmax_avx512(s, G, L, sum);
    for (int64_t j = 0; j < L; ++j) {
        for (int64_t c = 0; c < C; ++c) row[c] = load16(vb + j * D + c * 16);
        for (int64_t g = 0; g < G; ++g) {
            __m512 p = _mm512_set1_ps(s[g * L + j]);
            for (int64_t c = 0; c < C; ++c) acc[g * C + c] = _mm512_fmadd_ps(p, row[c], acc[g * C + c]);
        }
    }
    for (int64_t g = 0; g < G; ++g) {
        __m512 inv = _mm512_set1_ps(1.f / sum[g]);
        for (int64_t c = 0; c < C; ++c) _mm512_storeu_ps(ob + g * D + c * 16, _mm512_mul_ps(acc[g * C + c], inv));
    }
}
#endif

static void one_head_portable(const float *qb, const uint16_t *kb, const uint16_t *vb, float *ob, float *s,
                              int64_t G, int64_t L, int64_t D, float scale) {
    float row[MAX_D], acc[MAX_G * MAX_D], sum[MAX_G];
    for (int64_t j = 0; j < L; ++j) {
        for (int64_t d = 0; d < D; ++d) row[d] = bf16_to_float(kb[j * D + d]);
        for (int64_t g = 0; g < G; ++g) {
            float dot = 0.f;
            for (int64_t d = 0; d < D; ++d) dot += qb[g * D + d] * row[d];
            s[g * L + j] = dot * scale;
        }
    }
    softmax_rows(s, G, L, sum);
    memset(acc, 0, sizeof(float) * G * D);
    for (int64_t j = 0; j < L; ++j) {
        for (int64_t d = 0; d < D; ++d) row[d] = bf16_to_float(vb[j * D + d]);
        for (int64_t g = 0; g < G; ++g)
            for (int64_t d = 0; d < D; ++d) acc[g * D + d] += s[g * L + j] * row[d];
    }
    for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d) ob[g * D + d] = acc[g * D + d] / sum[g];
}

void decode_attention_bf16(const float *q, const uint16_t *k, const uint16_t *v, const int64_t *lens,
                           float *out, int64_t B, int64_t H, int64_t KH, int64_t D, int64_t cap, float scale) {
    const int64_t G = H / KH;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t t = 0; t < B * KH; ++t) {
        const int64_t b = t / KH, h = t % KH, L = lens[b];
        const uint16_t *kb = k + (b * KH + h) * cap * D, *vb = v + (b * KH + h) * cap * D;
        const float *qb = q + (b * H + h * G) * D;
        float *ob = out + (b * H + h * G) * D;
        float *s = (float *)malloc(sizeof(float) * G * L);
#ifdef __AVX512F__
        if (D % 16 == 0)
            one_head_avx512(qb, kb, vb, ob, s, G, L, D, scale);
        else
#endif
            one_head_portable(qb, kb, vb, ob, s, G, L, D, scale);
        free(s);
    }
}
