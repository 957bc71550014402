/* HOSTILE test kernel: recurses param0 levels deep through a bpf-to-bpf call (run it with a
 * large param0). The device must stop it at MAX_CALL_DEPTH frames, never overflow its own
 * stack. */
#include <csd.h>

static __attribute__((noinline)) uint64_t descend(uint64_t depth)
{
    volatile uint64_t frame[4] = {depth, depth, depth, depth}; /* use some stack per frame */
    if (depth == 0)
        return frame[0];
    return descend(depth - 1) + frame[1] + 1;
}

uint64_t csd_main(const struct csd_ctx *ctx)
{
    return descend(ctx->param0);
}
