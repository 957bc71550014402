/* HOSTILE test kernel: never terminates. The device must stop it with OutOfFuel. */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    volatile uint64_t spins = ctx->param0;
    for (;;)
        spins++;
    return spins;
}
