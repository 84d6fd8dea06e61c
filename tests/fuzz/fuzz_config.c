/* tests/fuzz/fuzz_config.c — libFuzzer target for core/config.c.
 *
 * Feeds the input to cfg_load_string (as a file) and, NUL-terminated, to
 * cfg_override (as a command-line assignment). Whenever a load succeeds it
 * also checks a property: cfg_write's output loads back into a fresh config
 * with every value identical (traps otherwise).
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_config -max_total_time=60
 */
#include "core/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator.
 * Weak, so a build that also links kernels/cpu/mem.c uses the real one. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

static const cfg_key SCHEMA[] = {
    {"train.learning_rate", CFG_FLOAT, "3e-4", "peak learning rate"},
    {"train.steps", CFG_INT, "100", "optimizer steps"},
    {"train.bf16", CFG_BOOL, "false", "bfloat16"},
    {"train.run_name", CFG_STRING, "demo", "run name"},
    {"data.path", CFG_STRING, NULL, "data root"},
    {"model.lora.r", CFG_INT, "8", "LoRA rank"},
    {"model.lora.alpha", CFG_FLOAT, "16", "LoRA alpha"},
};
#define NSCHEMA ((int)(sizeof SCHEMA / sizeof SCHEMA[0]))

/* cfg_write(c) must load back to the same values. */
static void check_roundtrip(const ar_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return;
    int rc = cfg_write(c, f);
    fclose(f);
    if (rc == 0) {
        ar_config *d = cfg_new(SCHEMA, NSCHEMA);
        if (d) {
            if (cfg_load_string(d, buf, len, "roundtrip") != 0) __builtin_trap();
            for (int k = 0; k < NSCHEMA; k++)
                if (strcmp(cfg_str(c, SCHEMA[k].key), cfg_str(d, SCHEMA[k].key)) != 0) __builtin_trap();
            cfg_free(d);
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ar_config *c = cfg_new(SCHEMA, NSCHEMA);
    if (!c) return 0;
    if (cfg_load_string(c, (const char *)data, size, "fuzz.cfg") == 0) check_roundtrip(c);

    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        if (cfg_override(c, s) == 0) check_roundtrip(c);
        free(s);
    }
    cfg_free(c);
    return 0;
}
