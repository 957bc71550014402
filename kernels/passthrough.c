/* passthrough: emits the bytes of offset..offset+len of the file snapshot unchanged.
 *
 * Output: the bytes themselves (fewer if the range passes the end of the snapshot).
 * Returns the number of bytes emitted, or a negative CSD_E* code (as uint64_t) on error.
 * Uses up to CSD_CHUNK bytes of scratch memory as its buffer.
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint8_t *buf = csd_scratch();
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK);
    if (chunk == 0)
        return (uint64_t)CSD_EINVAL;

    uint64_t pos = ctx->offset;
    /* Saturate: a range past 2^64 just runs to the end of the snapshot. */
    uint64_t end = ctx->len > UINT64_MAX - pos ? UINT64_MAX : pos + ctx->len;
    uint64_t total = 0;
    while (pos < end) {
        long n = csd_read(pos, buf, csd_min(chunk, end - pos));
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        long e = csd_emit(buf, (uint64_t)n);
        if (e < 0)
            return (uint64_t)e;
        pos += (uint64_t)n;
        total += (uint64_t)n;
    }
    return total;
}
