/* filter_u32: counts the little-endian uint32_t values greater than param0 in
 * offset..offset+len of the file snapshot. Values are taken at offset, offset+4, ...; a
 * trailing partial value (fewer than 4 bytes) is ignored. The comparison is unsigned and
 * 64-bit wide, so a param0 of 2^32 or more matches nothing.
 *
 * Output: the count as one little-endian uint64_t (8 bytes).
 * Returns the count, or a negative CSD_E* code (as uint64_t) on error.
 * Uses up to CSD_CHUNK bytes of scratch memory as its buffer (needs scratch_len >= 8).
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint8_t *buf = csd_scratch();
    /* A multiple of 4 so whole values stay aligned in the buffer. */
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK) & ~(uint64_t)3;
    if (chunk < 8)
        return (uint64_t)CSD_EINVAL;
    uint64_t threshold = ctx->param0;

    uint64_t pos = ctx->offset;
    uint64_t end = ctx->len > UINT64_MAX - pos ? UINT64_MAX : pos + ctx->len;
    uint64_t count = 0;
    uint64_t carry = 0; /* bytes of a partial value kept at buf[0..carry] (0..3) */
    while (pos < end) {
        long n = csd_read(pos, buf + carry, csd_min(chunk - carry, end - pos));
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        pos += (uint64_t)n;
        uint64_t have = carry + (uint64_t)n;
        uint64_t whole = have & ~(uint64_t)3;
        const uint32_t *v = (const uint32_t *)buf;
        for (uint64_t i = 0; i < whole / 4; i++)
            if ((uint64_t)v[i] > threshold)
                count++;
        /* A short read may leave a partial value: move it to the front. */
        carry = have - whole;
        for (uint64_t i = 0; i < carry; i++)
            buf[i] = buf[whole + i];
    }

    long e = csd_emit(&count, sizeof(count));
    if (e < 0)
        return (uint64_t)e;
    return count;
}
