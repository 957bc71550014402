/* HOSTILE test kernel: passes csd_emit a pointer outside every kernel region (and then one
 * that starts inside scratch but runs past its end). The helper must fault the kernel, never
 * the device, and emit nothing. */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    /* An address no region covers (between the context and the stack). */
    const void *wild = (const void *)0x180000000ULL;
    long e = csd_emit(wild, 16);
    if (e < 0)
        return (uint64_t)e;
    /* Starts inside scratch, ends past it. */
    uint8_t *scratch = csd_scratch();
    return (uint64_t)csd_emit(scratch + ctx->scratch_len - 8, 16);
}
