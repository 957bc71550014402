/* HOSTILE test kernel: loads through a pointer outside every region (address param0, or 0 by
 * default: a NULL dereference). The interpreter must fault the kernel. */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    const volatile uint64_t *p = (const volatile uint64_t *)ctx->param0;
    return *p;
}
