/* core/rng.h — seeded, reproducible random numbers.
 *
 * xoshiro256** (Blackman & Vigna) seeded through splitmix64. The same seed
 * gives the same sequence on every machine and thread count. For independent
 * streams (one per step, per tensor, per data worker) derive a sub-seed with
 * rng_derive(seed, stream) and seed a separate ar_rng from it.
 * An ar_rng is not shared between threads. Depends on libc/libm only.
 */
#ifndef ANYREF_CORE_RNG_H
#define ANYREF_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct { uint64_t s[4]; } ar_rng;

void     rng_seed(ar_rng *r, uint64_t seed);
uint64_t rng_u64(ar_rng *r);
double   rng_uniform(ar_rng *r);                 /* [0,1), 53 random bits */
double   rng_normal(ar_rng *r);                  /* N(0,1), Box-Muller */
uint64_t rng_below(ar_rng *r, uint64_t n);       /* uniform in [0,n), unbiased; 0 if n == 0 */
void     rng_shuffle_int(ar_rng *r, int *x, size_t n); /* Fisher-Yates */
/* x[n] ~ U[lo,hi), x[n] ~ N(mean, std^2) */
void rng_fill_uniform(ar_rng *r, float *x, size_t n, float lo, float hi);
void rng_fill_normal(ar_rng *r, float *x, size_t n, float mean, float std);
/* An independent sub-seed for (seed, stream): a hash, so nearby seeds and
 * nearby streams give unrelated sequences. */
uint64_t rng_derive(uint64_t seed, uint64_t stream);

#endif
