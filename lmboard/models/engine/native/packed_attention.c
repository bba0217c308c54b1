/* Packed attention for the scoring engine, on the CPU, in float32.

   Each query row attends to its prefix's keys (none, or a cache shared by many rows)
   and causally to its own segment's keys, in one pass: no padded rectangles, no
   log-sum-exp merge. Rows are processed in blocks of consecutive rows of one segment,
   each block with the G query heads of one key/value head (grouped-query attention):
   up to 12 queries share every key and value loaded. The scores of a block go through
   a register-blocked product (LMB_VL keys x 12 queries per step: 12 accumulators, one
   key vector and one broadcast fit AVX2's 16 registers as well as AVX-512's 32), a
   float32 softmax with a vectorized exp, and a register-blocked product with the values.

   Built at first use with the machine's compiler (engine/native/__init__.py), on
   AVX-512 or AVX2 + FMA (simd.h); without either lmb_packed_ok() is 0 and the engine
   keeps torch's fused kernel. The two widths sum in different orders, so their results
   differ in the last bits, as two BLAS builds do. Parallel over (block, kv head) with
   OpenMP (torch's runtime). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define QB 12 /* queries per block */

#if !LMB_VL
int lmb_packed_ok(void) { return 0; }
int lmb_attend(void) { return -2; }
#else
int lmb_packed_ok(void) { return LMB_VL; }

/* scores[j][n0 + n] = q[j] . keys[n] for n < nk, keys given transposed: kt[d * ld + n]. */
static void qk(const float *qs, int D, const float *kt, int64_t ld, int nk, float *scores, int sld, int n0) {
    int n = 0;
    for (; n < nk; n += LMB_VL) {
        const M m = vmask(nk - n);
        V acc[QB];
        for (int j = 0; j < QB; j++) acc[j] = vzero();
        for (int d = 0; d < D; d++) {
            V kv = vloadm(m, kt + d * ld + n);
            const float *qd = qs + d;
            for (int j = 0; j < QB; j++) acc[j] = vfma(vset(qd[j * D]), kv, acc[j]);
        }
        for (int j = 0; j < QB; j++) vstorem(scores + j * sld + n0 + n, m, acc[j]);
    }
}

/* out[j][:] += sum_n p[j][n0 + n] * vals[n][:] for n < nk; vals rows ldv apart. */
static void pv(const float *p, int sld, int n0, const float *vals, int64_t ldv, int nk, int D, float *out) {
    for (int c = 0; c < D; c += LMB_VL) {
        V acc[QB];
        for (int j = 0; j < QB; j++) acc[j] = vload(out + j * D + c);
        for (int n = 0; n < nk; n++) {
            V vv = vload(vals + n * ldv + c);
            const float *pn = p + n0 + n;
            for (int j = 0; j < QB; j++) acc[j] = vfma(vset(pn[j * sld]), vv, acc[j]);
        }
        for (int j = 0; j < QB; j++) vstore(out + j * D + c, acc[j]);
    }
}

static void one_block(const float *q, const float *kt, const float *v, int T, int H, int KH, int D,
              const int32_t *blocks, int b, int g, const int32_t *pid, const float *const *pkt,
              const float *const *pvv, const int32_t *plen, float scale, float *o,
              float *scores, float *qs, float *acc, int sld) {
    const int G = H / KH;
    const int r0 = blocks[3 * b], nr = blocks[3 * b + 1], s0 = blocks[3 * b + 2];
    const int p = pid[r0], P = p >= 0 ? plen[p] : 0;
    const int ns = r0 + nr - s0; /* own keys the block's last row sees */
    const int nq = nr * G;
    memset(qs, 0, (size_t)QB * D * sizeof(float));
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < G; j++) {
            const float *src = q + ((int64_t)(r0 + r) * H + g * G + j) * D;
            float *dst = qs + (r * G + j) * D;
            for (int d = 0; d < D; d++) dst[d] = src[d] * scale;
        }
    if (P) qk(qs, D, pkt[p] + (int64_t)g * D * P, P, P, scores, sld, 0);
    qk(qs, D, kt + (int64_t)g * D * T + s0, T, ns, scores, sld, P);
    /* causal: row r sees its own keys up to itself; softmax per query */
    for (int jq = 0; jq < nq; jq++) {
        float *s = scores + jq * sld;
        const int n = P + (r0 + jq / G) - s0 + 1;
        V mx = vset(-INFINITY);
        int i = 0;
        for (; i + LMB_VL <= n; i += LMB_VL) mx = vmax(mx, vload(s + i));
        const M tail = vmask(n - i);
        mx = vmax(mx, vor_fill(tail, vloadm(tail, s + i), -INFINITY));
        const V m = vset(vhmax(mx));
        V sum = vzero();
        for (i = 0; i + LMB_VL <= n; i += LMB_VL) {
            V e = vexp(vsub(vload(s + i), m));
            sum = vadd(sum, e);
            vstore(s + i, e);
        }
        V e = vkeep(tail, vexp(vsub(vloadm(tail, s + i), m)));
        sum = vadd(sum, e);
        vstorem(s + i, tail, e);
        const float inv = 1.0f / vsum(sum);
        const V vi = vset(inv);
        int end = P + ns; /* zero what this query must not see, and normalize */
        for (i = 0; i + LMB_VL <= n; i += LMB_VL) vstore(s + i, vmul(vload(s + i), vi));
        for (; i < n; i++) s[i] *= inv;
        for (; i < end; i++) s[i] = 0.0f;
    }
    for (int jq = nq; jq < QB; jq++) memset(scores + jq * sld, 0, (size_t)(P + ns) * sizeof(float));
    memset(acc, 0, (size_t)QB * D * sizeof(float));
    if (P) pv(scores, sld, 0, pvv[p] + (int64_t)g * P * D, D, P, D, acc);
    pv(scores, sld, P, v + ((int64_t)s0 * KH + g) * D, (int64_t)KH * D, ns, D, acc);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < G; j++)
            memcpy(o + ((int64_t)(r0 + r) * H + g * G + j) * D, acc + (r * G + j) * D, D * sizeof(float));
}


/* Blocks [b_lo, b_hi) of
     q     (T, H, D)       queries (rotary applied), row-major
     kt    (KH, D, T)      the rows' own keys, transposed
     v     (T, KH, D)      the rows' own values
     blocks (nb, 3)        first row, rows (<= QB / G), first row of the segment
     pid   (T)             each row's prefix (-1: none)
     pkt[p] (KH, D, plen[p]) prefix keys, transposed; pv_[p] (KH, plen[p], D) values
   into o (T, H, D). Returns 0, or -1 if a buffer cannot be allocated. */
int lmb_attend(const float *q, const float *kt, const float *v, int T, int H, int KH, int D,
               const int32_t *blocks, int b_lo, int b_hi, const int32_t *pid,
               const float *const *pkt, const float *const *pvv, const int32_t *plen,
               float scale, float *o) {
    int maxp = 0;
    for (int b = b_lo; b < b_hi; b++) {
        int p = pid[blocks[3 * b]];
        if (p >= 0 && plen[p] > maxp) maxp = plen[p];
    }
    int maxs = 0;
    for (int b = b_lo; b < b_hi; b++) {
        int n = blocks[3 * b] + blocks[3 * b + 1] - blocks[3 * b + 2];
        if (n > maxs) maxs = n;
    }
    const int sld = ((maxp + maxs + 15) / 16) * 16 + 16; /* a multiple of both widths */
    int failed = 0;
#pragma omp parallel
    {
        float *scores = aligned_alloc(64, (size_t)QB * sld * sizeof(float));
        float *qs = aligned_alloc(64, (size_t)QB * D * sizeof(float));
        float *acc = aligned_alloc(64, (size_t)QB * D * sizeof(float));
        if (!scores || !qs || !acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t w = (int64_t)b_lo * KH; w < (int64_t)b_hi * KH; w++) {
            if (!scores || !qs || !acc) continue;
            one_block(q, kt, v, T, H, KH, D, blocks, (int)(w / KH), (int)(w % KH), pid, pkt, pvv, plen, scale, o,
                      scores, qs, acc, sld);
        }
        free(scores); free(qs); free(acc);
    }
    return failed ? -1 : 0;
}
#endif

