/* pattern: counts the occurrences of a byte pattern in offset..offset+len of the file
 * snapshot, overlapping matches included (pattern "aa" occurs twice in "aaa"), and matches
 * that span chunk boundaries too.
 *
 * param0: the pattern, little-endian (byte i of the pattern is (param0 >> 8*i) & 0xff);
 *         bits above the pattern's length are ignored.
 * param1: the pattern's length in bytes, 1..=8; anything else returns CSD_EINVAL (as uint64_t)
 *         and emits nothing.
 * Output: the count as one little-endian uint64_t (8 bytes).
 * Returns the count, or a negative CSD_E* code (as uint64_t) on error.
 * Uses up to CSD_CHUNK bytes of scratch memory as its buffer.
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint64_t plen = ctx->param1;
    if (plen < 1 || plen > 8)
        return (uint64_t)CSD_EINVAL;
    uint8_t *buf = csd_scratch();
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK);
    if (chunk == 0)
        return (uint64_t)CSD_EINVAL;

    uint64_t mask = plen == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * plen)) - 1;
    uint64_t pattern = ctx->param0 & mask;
    uint64_t top = 8 * (plen - 1);

    /* window holds the last plen bytes seen, little-endian (the newest byte on top), across
     * chunk boundaries; seen counts bytes until the window is full. */
    uint64_t window = 0;
    uint64_t seen = 0;
    uint64_t count = 0;

    uint64_t pos = ctx->offset;
    uint64_t end = ctx->len > UINT64_MAX - pos ? UINT64_MAX : pos + ctx->len;
    while (pos < end) {
        long n = csd_read(pos, buf, csd_min(chunk, end - pos));
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        pos += (uint64_t)n;
        for (uint64_t i = 0; i < (uint64_t)n; i++) {
            window = (window >> 8) | ((uint64_t)buf[i] << top);
            if (seen < plen)
                seen++;
            if (seen == plen && window == pattern)
                count++;
        }
    }

    long e = csd_emit(&count, sizeof(count));
    if (e < 0)
        return (uint64_t)e;
    return count;
}
