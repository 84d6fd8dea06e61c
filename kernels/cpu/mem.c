/* kernels/cpu/mem.c — backend memory and threading for the CPU backend. */
#include "kernels/kernels.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <unistd.h>

const char *k_backend_name(void) { return "cpu"; }

void *k_malloc(size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}
void k_free(void *p) { free(p); }
void k_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
void k_copy(void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }
void k_upload(void *dst, const void *host_src, size_t bytes) { memcpy(dst, host_src, bytes); }
void k_download(void *host_dst, const void *src, size_t bytes) { memcpy(host_dst, src, bytes); }
void k_sync(void) {}
const char *k_error(void) { return NULL; }
int k_num_threads(void) { return omp_get_max_threads(); }
void k_set_num_threads(int n) {
    if (n < 1) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int k_mem_info(size_t *free_bytes, size_t *total_bytes) {
    long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES), all = sysconf(_SC_PHYS_PAGES);
    if (page <= 0 || avail < 0 || all <= 0) return -1;
    if (free_bytes) *free_bytes = (size_t)avail * (size_t)page;
    if (total_bytes) *total_bytes = (size_t)all * (size_t)page;
    return 0;
}
