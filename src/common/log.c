/* log.c - formatted log lines on stderr, text or JSON, one fprintf per line. */
#include "log.h"

#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int log_level_now = LOG_INFO;
unsigned log_debug = 0;
static int log_json = 0;

static const char *level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

static const struct {
    const char *name;
    enum log_sub sub;
} subs[] = {
    {"main", LOG_SUB_MAIN},   {"engine", LOG_SUB_ENGINE}, {"store", LOG_SUB_STORE},
    {"kafka", LOG_SUB_KAFKA}, {"http", LOG_SUB_HTTP},     {"config", LOG_SUB_CONFIG},
};

const char *log_sub_name(enum log_sub sub)
{
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (subs[i].sub == sub)
            return subs[i].name;
    return "main";
}

void log_set_json(int json)
{
    log_json = json;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_WARN;
    return -1;
}

int log_debug_parse(const char *s, unsigned *out, char *errstr, size_t errstr_size)
{
    unsigned mask = 0;
    const char *p = s;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 3 && strncmp(p, "all", 3) == 0) {
            mask = ~0u;
        } else if (n > 0) {
            size_t i;
            for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
                if (strlen(subs[i].name) == n && strncmp(subs[i].name, p, n) == 0)
                    break;
            if (i == sizeof(subs) / sizeof(subs[0])) {
                snprintf(errstr, errstr_size,
                         "unknown debug subsystem '%.*s' (known: main,engine,store,kafka,http,"
                         "config,all)",
                         (int)n, p);
                return -1;
            }
            mask |= subs[i].sub;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    *out = mask;
    return 0;
}

void log_write(enum log_level level, enum log_sub sub, const char *fmt, ...)
{
    char ts[40];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (log_json) {
        struct buf b = BUF_INIT;
        buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"sub\":\"%s\",\"msg\":", ts,
                   level_names[level], log_sub_name(sub));
        buf_add_json_str(&b, msg, strlen(msg));
        buf_adds(&b, "}\n");
        fputs(buf_str(&b), stderr);
        buf_release(&b);
    } else {
        fprintf(stderr, "%s %-5s %s: %s\n", ts, level_names[level], log_sub_name(sub), msg);
    }
}
