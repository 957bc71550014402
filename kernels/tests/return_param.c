/* return_param: a test kernel for how the mount turns a kernel's return value into an errno,
 * not a product kernel.
 *
 * Output: param0 as one little-endian uint64_t (8 bytes).
 * Returns param0 unchanged, so a test can make it return any value: a count, a CSD_E* code,
 * or a negative value that is no errno at all (-100000, INT64_MIN).
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint64_t value = ctx->param0;
    long e = csd_emit(&value, sizeof(value));
    if (e < 0)
        return (uint64_t)e;
    return value;
}
