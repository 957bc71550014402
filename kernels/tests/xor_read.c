/* xor_read: a read-stream test kernel, not a product kernel: emits offset..offset+len of the
 * file snapshot with every byte XORed with param0 & 0xff, so its output has the length of the
 * file's bytes but differs from them in every byte (for any key but 0), and two keys tell two
 * streams apart.
 *
 * Output: as many bytes as the range holds (fewer if it passes the end of the snapshot).
 * Returns the number of bytes emitted, or a negative CSD_E* code (as uint64_t) on error.
 * Uses up to CSD_CHUNK bytes of scratch memory as its buffer (needs scratch_len >= 8).
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint8_t *buf = csd_scratch();
    /* A multiple of 8 so the buffer can be processed a word at a time. */
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK) & ~(uint64_t)7;
    if (chunk == 0)
        return (uint64_t)CSD_EINVAL;
    uint8_t key = (uint8_t)(ctx->param0 & 0xff);
    uint64_t key64 = key * 0x0101010101010101ULL;

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
        uint64_t words = (uint64_t)n / 8;
        uint64_t *w = (uint64_t *)buf;
        for (uint64_t i = 0; i < words; i++)
            w[i] ^= key64;
        for (uint64_t i = words * 8; i < (uint64_t)n; i++)
            buf[i] ^= key;
        long e = csd_emit(buf, (uint64_t)n);
        if (e < 0)
            return (uint64_t)e;
        pos += (uint64_t)n;
        total += (uint64_t)n;
    }
    return total;
}
