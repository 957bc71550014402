/* HOSTILE test kernel: calls helper id 99, which does not exist. The loader links it (helper
 * ids are the verifier's business); the device's verifier must reject it at load. */
#include <csd.h>

static long (*const csd_no_such_helper)(uint64_t arg) = (void *)99;

uint64_t csd_main(const struct csd_ctx *ctx)
{
    return (uint64_t)csd_no_such_helper(ctx->param0);
}
