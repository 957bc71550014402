/* log_twice: a test kernel for `user.csd.log`, not a product kernel.
 *
 * Logs "first line" and "second line" with csd_log; emits nothing.
 * Returns 2, the number of lines logged.
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    (void)ctx;
    CSD_LOG_LIT("first line");
    CSD_LOG_LIT("second line");
    return 2;
}
