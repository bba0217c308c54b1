/* The reduced-precision forward's elementwise steps, fused (engine/packed.py, decode.py).

   Between its matrix products a bfloat16 layer ran about fifteen torch elementwise
   passes (an RMSNorm, its cast, the cast of q/k/v to float32, rotary's cat, negation,
   two products and a sum, SiLU, the gate's product...): on SmolLM2 (2 cores, a 2,046-token
   batch) torch's profiler put them at 0.38 s of a 1.31 s packed forward, more than the
   products' 0.32 s. Each kernel here reads
   its input once and writes its output once:

   - lmb_rms_norm_bf16: RMSNorm of float32 rows, weighted, rounded to bfloat16 (the
     products' input) in one pass;
   - lmb_silu_mul_bf16: SiLU(gate) * up from a fused gate/up output, in float32, rounded
     once (torch rounds SiLU's output, then the product: two roundings);
   - lmb_qkv_rotary: a fused q/k/v output (bfloat16) widened to float32, rotary applied
     to q and k, written as three contiguous arrays (the attention kernels' inputs).

   Rounding to bfloat16 is to nearest, ties to even, NaN to 0x7FC0: torch's rule. The
   float32 arithmetic is the same as torch's up to the order of a row's sum of squares
   and fused multiply-adds, so a bfloat16 row may differ from torch's in its last bit;
   the float32 recheck measures this path's error as it measures the products'. Vector
   code for AVX-512; a scalar build elsewhere (lmb_elementwise_width() says which). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if LMB_VL == 16
int lmb_elementwise_width(void) { return 16; }

static inline void store_bf16(uint16_t *p, __m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i bias = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)),
                                    _mm512_set1_epi32(0x7FFF));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

static inline V silu(V g) {
    /* g / (1 + e^-g), with e = exp(-|g|) (vexp takes x <= 0): g >= 0: g / (1 + e);
       g < 0: g * e / (1 + e) */
    V neg = _mm512_min_ps(g, _mm512_sub_ps(vzero(), g));
    V e = vexp(neg);
    V den = vadd(vset(1.0f), e);
    __mmask16 lt = _mm512_cmp_ps_mask(g, vzero(), _CMP_LT_OQ);
    V num = _mm512_mask_mul_ps(g, lt, g, e);
    return _mm512_div_ps(num, den);
}
#else
int lmb_elementwise_width(void) { return 1; }
#endif

void lmb_rms_norm_bf16(const float *x, const float *w, int64_t T, int64_t H, float eps, uint16_t *out) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *r = x + t * H;
        uint16_t *o = out + t * H;
        int64_t i = 0;
        float ss = 0.0f;
#if LMB_VL == 16
        V acc = vzero();
        for (; i + 16 <= H; i += 16) {
            V a = vload(r + i);
            acc = vfma(a, a, acc);
        }
        ss = vsum(acc);
#endif
        for (; i < H; i++) ss += r[i] * r[i];
        const float rstd = 1.0f / sqrtf(ss / (float)H + eps);
        i = 0;
#if LMB_VL == 16
        for (; i + 16 <= H; i += 16) store_bf16(o + i, vmul(vmul(vload(r + i), vset(rstd)), vload(w + i)));
#endif
        for (; i < H; i++) o[i] = to_bf16((r[i] * rstd) * w[i]);
    }
}

/* gu: (T, 2I) bfloat16, gate then up; out: (T, I) bfloat16 */
void lmb_silu_mul_bf16(const uint16_t *gu, int64_t T, int64_t I, uint16_t *out) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const uint16_t *g = gu + t * 2 * I, *u = g + I;
        uint16_t *o = out + t * I;
        int64_t i = 0;
#if LMB_VL == 16
        for (; i + 16 <= I; i += 16) store_bf16(o + i, vmul(silu(vload_bf16(g + i)), vload_bf16(u + i)));
#endif
        for (; i < I; i++) {
            const float a = from_bf16(g[i]);
            o[i] = to_bf16(a / (1.0f + expf(-a)) * from_bf16(u[i]));
        }
    }
}

/* qkv: (T, (H + 2 KH) D) bfloat16; cos, sin: (T, D) float32; q (T, H, D), k (T, KH, D),
   v (T, KH, D) float32. Rotary: x * cos + rotate_half(x) * sin, rotate_half(x) being
   (-x[D/2:], x[:D/2]). */
void lmb_qkv_rotary(const uint16_t *qkv, const float *cos_, const float *sin_, int64_t T, int64_t H, int64_t KH,
                    int64_t D, float *q, float *k, float *v) {
    const int64_t W = (H + 2 * KH) * D, half = D / 2;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const uint16_t *row = qkv + t * W;
        const float *c = cos_ + t * D, *s = sin_ + t * D;
        for (int64_t j = 0; j < H + KH; j++) {
            const uint16_t *x = row + j * D;
            float *o = j < H ? q + (t * H + j) * D : k + (t * KH + j - H) * D;
            int64_t i = 0;
#if LMB_VL == 16
            if (half % 16 == 0)
                for (; i < half; i += 16) {
                    V a = vload_bf16(x + i), b = vload_bf16(x + half + i);
                    vstore(o + i, vsub(vmul(a, vload(c + i)), vmul(b, vload(s + i))));
                    vstore(o + half + i, vadd(vmul(b, vload(c + half + i)), vmul(a, vload(s + half + i))));
                }
#endif
            for (; i < half; i++) {
                const float a = from_bf16(x[i]), b = from_bf16(x[half + i]);
                o[i] = a * c[i] - b * s[i];
                o[half + i] = b * c[half + i] + a * s[half + i];
            }
        }
        const uint16_t *vx = row + (H + KH) * D;
        float *vo = v + t * KH * D;
        for (int64_t i = 0; i < KH * D; i++) vo[i] = from_bf16(vx[i]);
    }
}
