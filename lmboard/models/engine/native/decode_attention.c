/* Decode attention over a slotted KV cache: one query token per sequence.
 *
 * For each (sequence b, kv head h) the keys and values of positions 0..lens[b]-1 are
 * read once, for all G = heads / kv_heads query heads that share them (grouped-query
 * attention); scores, softmax and the weighted sum are computed in float32. The cache
 * is bfloat16 (widened to float32 on the fly: decode_attention_bf16) or float32
 * (decode_attention_f32). Queries come in float32 (after rotary), outputs go out in
 * float32.
 *
 * Layouts (contiguous): q (B, H, D); k, v (slots, KH, cap, D); lens (B,) int64;
 * out (B, H, D). Parallel over (b, h) with OpenMP (torch's runtime, loaded first, is
 * the one that runs it). With AVX-512 or AVX2 + FMA (simd.h) and D a multiple of the
 * vector width the rows are processed a vector at a time; otherwise a portable loop.
 * A sequence's numbers depend on its own length only, never on its batch-mates'.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

enum { MAX_G = 16, MAX_D = 256 };

static inline float bf16_to_float(uint16_t x) {
    uint32_t u = ((uint32_t)x) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline float f32_to_float(float x) { return x; }

/* s[g * L + j] = exp(score - max) for each query head g; fills sum[g]. */
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

#if LMB_VL
static void softmax_vec(float *s, int64_t G, int64_t L, float *sum) {
    for (int64_t g = 0; g < G; ++g) {
        float *r = s + g * L;
        V m = vset(-FLT_MAX);
        int64_t j = 0;
        for (; j + LMB_VL <= L; j += LMB_VL) m = vmax(m, vload(r + j));
        float mx = vhmax(m);
        for (int64_t i = j; i < L; ++i) mx = r[i] > mx ? r[i] : mx;
        V vm = vset(mx), acc = vzero();
        for (j = 0; j + LMB_VL <= L; j += LMB_VL) {
            V e = vexp(vsub(vload(r + j), vm));
            vstore(r + j, e);
            acc = vadd(acc, e);
        }
        if (j < L) {
            const M k = vmask((int)(L - j));
            V e = vkeep(k, vexp(vsub(vloadm(k, r + j), vm)));
            vstorem(r + j, k, e);
            acc = vadd(acc, e);
        }
        sum[g] = vsum(acc);
    }
}

static inline V vload_f32(const float *p) { return vload(p); }

/* One (sequence, kv head): G query heads over L positions, D a multiple of LMB_VL. */
#define ONE_HEAD_VEC(NAME, T, LOAD)                                                                  \
    static void NAME(const float *qb, const T *kb, const T *vb, float *ob, float *s, int64_t G,      \
                     int64_t L, int64_t D, float scale) {                                            \
        const int64_t C = D / LMB_VL;                                                                \
        V qv[MAX_G * MAX_D / LMB_VL], acc[MAX_G * MAX_D / LMB_VL], row[MAX_D / LMB_VL];              \
        float sum[MAX_G];                                                                            \
        for (int64_t i = 0; i < G * C; ++i) {                                                        \
            qv[i] = vmul(vload(qb + i * LMB_VL), vset(scale));                                       \
            acc[i] = vzero();                                                                        \
        }                                                                                            \
        for (int64_t j = 0; j < L; ++j) {                                                            \
            for (int64_t c = 0; c < C; ++c) row[c] = LOAD(kb + j * D + c * LMB_VL);                  \
            for (int64_t g = 0; g < G; ++g) {                                                        \
                V a = vmul(qv[g * C], row[0]);                                                       \
                for (int64_t c = 1; c < C; ++c) a = vfma(qv[g * C + c], row[c], a);                  \
                s[g * L + j] = vsum(a);                                                              \
            }                                                                                        \
        }                                                                                            \
        softmax_vec(s, G, L, sum);                                                                   \
        for (int64_t j = 0; j < L; ++j) {                                                            \
            for (int64_t c = 0; c < C; ++c) row[c] = LOAD(vb + j * D + c * LMB_VL);                  \
            for (int64_t g = 0; g < G; ++g) {                                                        \
                V p = vset(s[g * L + j]);                                                            \
                for (int64_t c = 0; c < C; ++c) acc[g * C + c] = vfma(p, row[c], acc[g * C + c]);    \
            }                                                                                        \
        }                                                                                            \
        for (int64_t g = 0; g < G; ++g) {                                                            \
            V inv = vset(1.f / sum[g]);                                                              \
            for (int64_t c = 0; c < C; ++c) vstore(ob + g * D + c * LMB_VL, vmul(acc[g * C + c], inv)); \
        }                                                                                            \
    }
ONE_HEAD_VEC(one_head_vec_bf16, uint16_t, vload_bf16)
ONE_HEAD_VEC(one_head_vec_f32, float, vload_f32)
#endif

#define ONE_HEAD_PORTABLE(NAME, T, TO_FLOAT)                                                         \
    static void NAME(const float *qb, const T *kb, const T *vb, float *ob, float *s, int64_t G,      \
                     int64_t L, int64_t D, float scale) {                                            \
        float row[MAX_D], acc[MAX_G * MAX_D], sum[MAX_G];                                            \
        for (int64_t j = 0; j < L; ++j) {                                                            \
            for (int64_t d = 0; d < D; ++d) row[d] = TO_FLOAT(kb[j * D + d]);                        \
            for (int64_t g = 0; g < G; ++g) {                                                        \
                float dot = 0.f;                                                                     \
                for (int64_t d = 0; d < D; ++d) dot += qb[g * D + d] * row[d];                       \
                s[g * L + j] = dot * scale;                                                          \
            }                                                                                        \
        }                                                                                            \
        softmax_rows(s, G, L, sum);                                                                  \
        memset(acc, 0, sizeof(float) * G * D);                                                       \
        for (int64_t j = 0; j < L; ++j) {                                                            \
            for (int64_t d = 0; d < D; ++d) row[d] = TO_FLOAT(vb[j * D + d]);                        \
            for (int64_t g = 0; g < G; ++g)                                                          \
                for (int64_t d = 0; d < D; ++d) acc[g * D + d] += s[g * L + j] * row[d];             \
        }                                                                                            \
        for (int64_t g = 0; g < G; ++g)                                                              \
            for (int64_t d = 0; d < D; ++d) ob[g * D + d] = acc[g * D + d] / sum[g];                 \
    }
ONE_HEAD_PORTABLE(one_head_portable_bf16, uint16_t, bf16_to_float)
ONE_HEAD_PORTABLE(one_head_portable_f32, float, f32_to_float)

#if LMB_VL
#define VEC_OR_PORTABLE(SUFFIX)                                                                      \
    if (D % LMB_VL == 0)                                                                             \
        one_head_vec_##SUFFIX(qb, kb, vb, ob, s, G, L, D, scale);                                    \
    else                                                                                             \
        one_head_portable_##SUFFIX(qb, kb, vb, ob, s, G, L, D, scale);
#else
#define VEC_OR_PORTABLE(SUFFIX) one_head_portable_##SUFFIX(qb, kb, vb, ob, s, G, L, D, scale);
#endif

#define ENTRY(NAME, T, SUFFIX)                                                                       \
    void NAME(const float *q, const T *k, const T *v, const int64_t *lens, float *out, int64_t B,    \
              int64_t H, int64_t KH, int64_t D, int64_t cap, float scale) {                          \
        const int64_t G = H / KH;                                                                    \
        _Pragma("omp parallel for schedule(dynamic, 4)")                                             \
        for (int64_t t = 0; t < B * KH; ++t) {                                                       \
            const int64_t b = t / KH, h = t % KH, L = lens[b];                                       \
            const T *kb = k + (b * KH + h) * cap * D, *vb = v + (b * KH + h) * cap * D;              \
            const float *qb = q + (b * H + h * G) * D;                                               \
            float *ob = out + (b * H + h * G) * D;                                                   \
            float *s = (float *)malloc(sizeof(float) * G * L);                                       \
            VEC_OR_PORTABLE(SUFFIX)                                                                  \
            free(s);                                                                                 \
        }                                                                                            \
    }
ENTRY(decode_attention_bf16, uint16_t, bf16)
ENTRY(decode_attention_f32, float, f32)
