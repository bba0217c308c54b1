/* The float32 vector operations the native kernels need, over AVX-512 (16 lanes) or
   AVX2 + FMA (8 lanes), whichever the compiler targets (-march=native). The kernels
   are written once against these; LMB_VL is 0 where neither is available.

   Masks select the first n lanes (vmask(n), 0 <= n <= LMB_VL); masked loads read
   nothing from the lanes left out (no fault past a buffer's end), as on AVX-512.
   vexp is exp(x) for x <= 0: 2^i * 2^f, |f| <= 0.5, 2^f by a degree-6 polynomial
   (relative error about 2e-7, as expf's float rounding); the same polynomial on both. */
#ifndef LMB_SIMD_H
#define LMB_SIMD_H
#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define LMB_VL 16
typedef __m512 V;
typedef __mmask16 M;
static inline M vmask(int n) { return n >= 16 ? (M)0xFFFF : (M)((1u << n) - 1); }
static inline V vzero(void) { return _mm512_setzero_ps(); }
static inline V vset(float x) { return _mm512_set1_ps(x); }
static inline V vload(const float *p) { return _mm512_loadu_ps(p); }
static inline V vloadm(M m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vstore(float *p, V x) { _mm512_storeu_ps(p, x); }
static inline void vstorem(float *p, M m, V x) { _mm512_mask_storeu_ps(p, m, x); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline V vkeep(M m, V x) { return _mm512_maskz_mov_ps(m, x); }    /* lanes outside m: 0 */
static inline V vor_fill(M m, V x, float fill) { return _mm512_mask_blend_ps(m, _mm512_set1_ps(fill), x); }
static inline float vsum(V x) { return _mm512_reduce_add_ps(x); }
static inline float vhmax(V x) { return _mm512_reduce_max_ps(x); }
static inline V vround(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline V vpow2i(V p, V i) { return _mm512_scalef_ps(p, i); }  /* p * 2^i, i integral */
/* 16 bfloat16 values (uint16 bits) widened to float32 */
static inline V vload_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LMB_VL 8
typedef __m256 V;
typedef __m256i M;
static inline M vmask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vzero(void) { return _mm256_setzero_ps(); }
static inline V vset(float x) { return _mm256_set1_ps(x); }
static inline V vload(const float *p) { return _mm256_loadu_ps(p); }
static inline V vloadm(M m, const float *p) { return _mm256_maskload_ps(p, m); }
static inline void vstore(float *p, V x) { _mm256_storeu_ps(p, x); }
static inline void vstorem(float *p, M m, V x) { _mm256_maskstore_ps(p, m, x); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
static inline V vkeep(M m, V x) { return _mm256_and_ps(_mm256_castsi256_ps(m), x); }
static inline V vor_fill(M m, V x, float fill) { return _mm256_blendv_ps(_mm256_set1_ps(fill), x, _mm256_castsi256_ps(m)); }
static inline float vsum(V x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float vhmax(V x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline V vround(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline V vpow2i(V p, V i) {  /* i >= -126 here (vexp clamps x at -87): a normal 2^i */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(i), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
static inline V vload_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

#else
#define LMB_VL 0
#endif

#if LMB_VL
static inline V vexp(V x) {
    x = vmax(x, vset(-87.0f));
    V t = vmul(x, vset(1.44269504088896341f));
    V i = vround(t);
    V f = vmul(vsub(t, i), vset(0.6931471805599453f));
    V p = vset(1.0f / 720);
    p = vfma(p, f, vset(1.0f / 120));
    p = vfma(p, f, vset(1.0f / 24));
    p = vfma(p, f, vset(1.0f / 6));
    p = vfma(p, f, vset(0.5f));
    p = vfma(p, f, vset(1.0f));
    p = vfma(p, f, vset(1.0f));
    return vpow2i(p, i);
}
#endif
#endif
