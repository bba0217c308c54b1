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
 * loaded first, is the one that runs it).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_float(uint16_t x) {
    uint32_t u = ((uint32_t)x) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void decode_attention_bf16(const float *q, const uint16_t *k, const uint16_t *v, const int64_t *lens,
                           float *out, int64_t B, int64_t H, int64_t KH, int64_t D, int64_t cap, float scale) {
    const int64_t G = H / KH;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t t = 0; t < B * KH; ++t) {
        const int64_t b = t / KH, h = t % KH, L = lens[b];
        const uint16_t *kb = k + (b * KH + h) * cap * D;
        const uint16_t *vb = v + (b * KH + h) * cap * D;
        const float *qb = q + (b * H + h * G) * D;
        float *s = (float *)malloc(sizeof(float) * G * L);
        float row[256], acc[16 * 256], mx[16], sum[16];
        for (int64_t g = 0; g < G; ++g) mx[g] = -INFINITY;
        for (int64_t j = 0; j < L; ++j) {
            for (int64_t d = 0; d < D; ++d) row[d] = bf16_to_float(kb[j * D + d]);
            for (int64_t g = 0; g < G; ++g) {
                float dot = 0.f;
                for (int64_t d = 0; d < D; ++d) dot += qb[g * D + d] * row[d];
                dot *= scale;
                s[g * L + j] = dot;
                if (dot > mx[g]) mx[g] = dot;
            }
        }
        for (int64_t g = 0; g < G; ++g) {
            float acc_sum = 0.f;
            for (int64_t j = 0; j < L; ++j) {
                float e = expf(s[g * L + j] - mx[g]);
                s[g * L + j] = e;
                acc_sum += e;
            }
            sum[g] = acc_sum;
            for (int64_t d = 0; d < D; ++d) acc[g * D + d] = 0.f;
        }
        for (int64_t j = 0; j < L; ++j) {
            for (int64_t d = 0; d < D; ++d) row[d] = bf16_to_float(vb[j * D + d]);
            for (int64_t g = 0; g < G; ++g) {
                const float p = s[g * L + j];
                for (int64_t d = 0; d < D; ++d) acc[g * D + d] += p * row[d];
            }
        }
        for (int64_t g = 0; g < G; ++g)
            for (int64_t d = 0; d < D; ++d) out[(b * H + h * G + g) * D + d] = acc[g * D + d] / sum[g];
        free(s);
    }
}
