/* core/rng.c — xoshiro256** seeded through splitmix64 (see rng.h). */
#include "core/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t z) {
    uint64_t s = z;
    return splitmix64(&s);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(ar_rng *r, uint64_t seed) {
    uint64_t st = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&st);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* all-zero state is a fixed point */
}

uint64_t rng_u64(ar_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(ar_rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

/* One Box-Muller pair from two uniforms; u1 in (0,1] keeps log finite. */
static void normal_pair(ar_rng *r, double *a, double *b) {
    double u1 = 1.0 - rng_uniform(r);
    double u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925 * u2;
    *a = rad * cos(th);
    *b = rad * sin(th);
}

double rng_normal(ar_rng *r) {
    double a, b;
    normal_pair(r, &a, &b);
    return a;
}

uint64_t rng_below(ar_rng *r, uint64_t n) {
    if (n == 0) return 0;
    /* Rejection: accept x below the largest multiple of n. */
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;
    uint64_t x;
    do x = rng_u64(r); while (x > limit);
    return x % n;
}

void rng_shuffle_int(ar_rng *r, int *x, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(r, i);
        int t = x[i - 1]; x[i - 1] = x[j]; x[j] = t;
    }
}

void rng_fill_uniform(ar_rng *r, float *x, size_t n, float lo, float hi) {
    double w = (double)hi - (double)lo;
    for (size_t i = 0; i < n; i++) {
        float v = (float)((double)lo + w * rng_uniform(r));
        if (hi > lo && v >= hi) v = nextafterf(hi, lo); /* float rounding may reach hi */
        x[i] = v;
    }
}

void rng_fill_normal(ar_rng *r, float *x, size_t n, float mean, float std) {
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double a, b;
        normal_pair(r, &a, &b);
        x[i] = (float)(mean + std * a);
        x[i + 1] = (float)(mean + std * b);
    }
    if (i < n) x[i] = (float)(mean + std * rng_normal(r));
}

uint64_t rng_derive(uint64_t seed, uint64_t stream) {
    return mix64(mix64(seed) ^ mix64(stream ^ 0xD1B54A32D192ED03ull));
}
