/* HOSTILE test kernel: reads and writes past the top of its 512-byte stack frame (above r10),
 * where the caller's frame or nothing at all lies. The interpreter must fault the kernel. */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    volatile uint64_t local = ctx->param0;
    volatile uint64_t *above = (volatile uint64_t *)(&local + 64 + ctx->param1);
    *above = local;
    return *above;
}
