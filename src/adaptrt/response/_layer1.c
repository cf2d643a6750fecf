/* The first encoder block of Part I's network ("3x3 same convolution 1 -> C, 2x2 max pool, ReLU") and its
 * weight gradient, fused: no (b, 32, 32, 4 phases, C) intermediate is written to memory.
 *
 * Built and loaded at run time by adaptrt.response.native (plain C11, no Python or torch headers; called
 * through ctypes with the data pointers of contiguous float32 / uint8 tensors).
 *
 * Layouts (all row-major, contiguous):
 *   xp   (b, 66, 66)  the 64x64 images zero-padded by one pixel
 *   wt   (9, C)       the kernel, tap-major: wt[3 * kr + kc][o] = weight[o][0][kr][kc]
 *   bias (C)
 *   h    (b, 32, 32, C)  relu(max over the 2x2 window of the convolution)
 *   idx  (b, 32, 32, C)  the winning phase p = 2a + c of the window (a row, c column offset; the first
 *                        maximum wins, as torch's max_pool2d), or 4 where the maximum is <= 0 (the ReLU
 *                        passes no gradient there)
 *   gh   (b, 32, 32, C)  the loss's gradient at h
 *   gw   (9, C), gb (C)  the gradient of the kernel (tap-major) and of the bias
 *
 * Pooled pixel (i, j), phase (a, c), tap (kr, kc) reads xp[2i + a + kr][2j + c + kc]: the 4x4 patch at
 * (2i, 2j). The loops over the channels o are independent lanes, so the compiler vectorises them without any
 * reassociation of sums; each output's sum is taken in the fixed order bias, tap 0 .. tap 8. Channels go in
 * vectors of L lanes (GCC/Clang vector extensions), the last C % L one at a time.
 */
#include <stdint.h>
#include <string.h>

#define PAD 66
#define POOLED 32
#define L 16 /* lanes: channels per vector (one AVX-512 register; two AVX2 or four SSE registers elsewhere) */

typedef float vf __attribute__((vector_size(4 * L)));
typedef int32_t vi __attribute__((vector_size(4 * L)));
typedef uint8_t vb __attribute__((vector_size(L)));

static inline vf loadf(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline vf splat(float a) { return (vf){0} + a; }
static inline vf self(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); } /* m ? a : b */
static inline vi seli(vi m, vi a, vi b) { return (a & m) | (b & ~m); }

static inline void patch(const float *x, int i, int j, float pt[4][4]) {
    for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 4; ++q) pt[r][q] = x[(2 * i + r) * PAD + 2 * j + q];
}

/* One window, channels o0 .. o0 + L - 1: the four phases' sums, the max, its phase, the ReLU. */
static inline void fwd_lanes(const float pt[4][4], const float *wt, const float *bias, int o0, int C,
                             float *ho, uint8_t *io) {
    const vf bv = loadf(bias + o0);
    vf c0 = bv, c1 = bv, c2 = bv, c3 = bv;
    for (int kr = 0; kr < 3; ++kr) {
        for (int kc = 0; kc < 3; ++kc) {
            const vf w = loadf(wt + (3 * kr + kc) * C + o0);
            c0 += w * splat(pt[kr][kc]);
            c1 += w * splat(pt[kr][kc + 1]);
            c2 += w * splat(pt[kr + 1][kc]);
            c3 += w * splat(pt[kr + 1][kc + 1]);
        }
    }
    const vi m01 = c1 > c0, m23 = c3 > c2; /* strict: a tie goes to the first phase */
    const vf v01 = self(m01, c1, c0), v23 = self(m23, c3, c2);
    const vi up = v23 > v01;
    const vf v = self(up, v23, v01);
    const vi on = v > splat(0.0f);
    const vi one = (vi){0} + 1, four = (vi){0} + 4;
    const vi ph = seli(up, (m23 & one) + 2, m01 & one);
    const vf hv = self(on, v, splat(0.0f));
    const vb ib = __builtin_convertvector(seli(on, ph, four), vb);
    memcpy(ho + o0, &hv, sizeof hv);
    memcpy(io + o0, &ib, sizeof ib);
}

/* The same for one channel (the channels beyond the last full vector). */
static inline void fwd_one(const float pt[4][4], const float *wt, const float *bias, int o, int C, float *ho,
                           uint8_t *io) {
    float c[4] = {bias[o], bias[o], bias[o], bias[o]};
    for (int kr = 0; kr < 3; ++kr)
        for (int kc = 0; kc < 3; ++kc) {
            const float w = wt[(3 * kr + kc) * C + o];
            c[0] += w * pt[kr][kc];
            c[1] += w * pt[kr][kc + 1];
            c[2] += w * pt[kr + 1][kc];
            c[3] += w * pt[kr + 1][kc + 1];
        }
    const int lo = c[1] > c[0], hi = c[3] > c[2] ? 3 : 2;
    const float v01 = lo ? c[1] : c[0], v23 = c[3] > c[2] ? c[3] : c[2];
    const int up = v23 > v01;
    const float v = up ? v23 : v01;
    ho[o] = v > 0.0f ? v : 0.0f;
    io[o] = (uint8_t)(v > 0.0f ? (up ? hi : lo) : 4);
}

void adaptrt_layer1_fwd(const float *xp, const float *wt, const float *bias, float *h, uint8_t *idx, int64_t b,
                        int64_t C64) {
    const int C = (int)C64, full = C - C % L;
    for (int64_t s = 0; s < b; ++s) {
        const float *x = xp + s * PAD * PAD;
        for (int i = 0; i < POOLED; ++i)
            for (int j = 0; j < POOLED; ++j) {
                float pt[4][4];
                patch(x, i, j, pt);
                const int64_t at = ((s * POOLED + i) * POOLED + j) * C;
                for (int o0 = 0; o0 < full; o0 += L) fwd_lanes(pt, wt, bias, o0, C, h + at, idx + at);
                for (int o = full; o < C; ++o) fwd_one(pt, wt, bias, o, C, h + at, idx + at);
            }
    }
}

/* Per-sample sums in float (as a matrix product would take them), the total over samples in double. */
void adaptrt_layer1_bwd(const float *gh, const uint8_t *idx, const float *xp, float *gw, float *gb, int64_t b,
                        int64_t C64) {
    const int C = (int)C64, full = C - C % L;
    double tw[9 * 64], tb[64];
    for (int k = 0; k < 9 * C; ++k) tw[k] = 0.0;
    for (int o = 0; o < C; ++o) tb[o] = 0.0;
    for (int64_t s = 0; s < b; ++s) {
        float aw[9 * 64], ab[64];
        const float *x = xp + s * PAD * PAD;
        const int64_t base = s * POOLED * POOLED * C;
        for (int o0 = 0; o0 < full; o0 += L) {
            vf acc[9], accb = splat(0.0f);
            for (int t = 0; t < 9; ++t) acc[t] = splat(0.0f);
            for (int i = 0; i < POOLED; ++i)
                for (int j = 0; j < POOLED; ++j) {
                    float pt[4][4];
                    patch(x, i, j, pt);
                    const int64_t at = base + (i * POOLED + j) * C + o0;
                    const vf g = loadf(gh + at);
                    vb ib;
                    memcpy(&ib, idx + at, sizeof ib);
                    const vi p = __builtin_convertvector(ib, vi);
                    const vf zero = splat(0.0f);
                    const vf g0 = self(p == 0, g, zero), g1 = self(p == 1, g, zero);
                    const vf g2 = self(p == 2, g, zero), g3 = self(p == 3, g, zero);
                    accb += self(p < 4, g, zero);
                    for (int kr = 0; kr < 3; ++kr)
                        for (int kc = 0; kc < 3; ++kc)
                            acc[3 * kr + kc] += g0 * splat(pt[kr][kc]) + g1 * splat(pt[kr][kc + 1]) +
                                                g2 * splat(pt[kr + 1][kc]) + g3 * splat(pt[kr + 1][kc + 1]);
                }
            for (int t = 0; t < 9; ++t) memcpy(aw + t * C + o0, &acc[t], sizeof acc[t]);
            memcpy(ab + o0, &accb, sizeof accb);
        }
        for (int o = full; o < C; ++o) {
            float a9[9] = {0}, a1 = 0.0f;
            for (int i = 0; i < POOLED; ++i)
                for (int j = 0; j < POOLED; ++j) {
                    float pt[4][4];
                    patch(x, i, j, pt);
                    const int64_t at = base + (i * POOLED + j) * C + o;
                    const int p = idx[at];
                    if (p > 3) continue;
                    const float g = gh[at];
                    a1 += g;
                    const int a = p >> 1, c = p & 1;
                    for (int kr = 0; kr < 3; ++kr)
                        for (int kc = 0; kc < 3; ++kc) a9[3 * kr + kc] += g * pt[kr + a][kc + c];
                }
            for (int t = 0; t < 9; ++t) aw[t * C + o] = a9[t];
            ab[o] = a1;
        }
        for (int k = 0; k < 9 * C; ++k) tw[k] += aw[k];
        for (int o = 0; o < C; ++o) tb[o] += ab[o];
    }
    for (int k = 0; k < 9 * C; ++k) gw[k] = (float)tw[k];
    for (int o = 0; o < C; ++o) gb[o] = (float)tb[o];
}
