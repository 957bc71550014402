/* HOSTILE test kernel: writes into the read-only context. The interpreter must fault the
 * kernel, and the context must be unchanged for the next run. */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    volatile uint64_t *len = (volatile uint64_t *)&ctx->len;
    *len = 0xdeadbeef;
    return *len;
}
