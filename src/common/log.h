/* log.h - one logger for flowd, librdkafka, SQLite and civetweb.
 *
 * FLOWD_LOG(level, sub, fmt, ...) tests the level (and, for DEBUG, the subsystem's debug bit)
 * before it evaluates its arguments (redis serverLog). Lines go to stderr as text
 * `2026-11-23T10:00:00.123Z INFO  engine: message` or as JSON lines.
 * @thread Safe to call from any thread.
 */
#ifndef FLOWD_LOG_H
#define FLOWD_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

enum log_sub {
    LOG_SUB_MAIN = 1 << 0,
    LOG_SUB_ENGINE = 1 << 1,
    LOG_SUB_STORE = 1 << 2,
    LOG_SUB_KAFKA = 1 << 3,
    LOG_SUB_HTTP = 1 << 4,
    LOG_SUB_CONFIG = 1 << 5,
};

extern int log_level_now;  /* messages above this level are skipped */
extern unsigned log_debug; /* LOG_SUB_* bits that log at DEBUG */

#define FLOWD_LOG(level, sub, ...)                                  \
    do {                                                            \
        if ((int)(level) <= log_level_now &&                        \
            ((int)(level) < (int)LOG_DEBUG || (log_debug & (sub)))) \
            log_write((level), (sub), __VA_ARGS__);                 \
    } while (0)

void log_write(enum log_level level, enum log_sub sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "error", "warn", "info", "debug" -> level; returns -1 if unknown. */
int log_level_parse(const char *s);
/* "store,kafka,http" or "all" -> bitmask; returns -1 and names the bad word in errstr. */
int log_debug_parse(const char *s, unsigned *out, char *errstr, size_t errstr_size);
/* 0 = text, 1 = json. */
void log_set_json(int json);
const char *log_sub_name(enum log_sub sub);

#endif
