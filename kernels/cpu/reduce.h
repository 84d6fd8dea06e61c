/* kernels/cpu/reduce.h — deterministic parallel sums.
 * [0, n) is cut into at most DET_CHUNKS chunks whose size depends only on n;
 * each chunk is summed by one thread (float blocks of 1024 added in double)
 * and the chunk sums are added in order. The result is bitwise the same for
 * every thread count and every run — what train.deterministic relies on —
 * unlike an OpenMP reduction(+:), whose combining order is unspecified. */
#ifndef ANYREF_REDUCE_H
#define ANYREF_REDUCE_H
#include <stddef.h>

enum { DET_CHUNKS = 4096, DET_BLOCK = 1024 };

static inline size_t det_chunk_size(size_t n) {
    size_t c = (n + DET_CHUNKS - 1) / DET_CHUNKS;
    c = (c + DET_BLOCK - 1) / DET_BLOCK * DET_BLOCK;
    return c < DET_BLOCK ? DET_BLOCK : c;
}
static inline double det_add(const double *part, size_t nc) {
    double t = 0.0;
    for (size_t k = 0; k < nc; k++) t += part[k];
    return t;
}
#endif
