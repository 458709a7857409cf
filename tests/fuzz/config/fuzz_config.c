/* fuzz_config.c - fuzzes the configuration parser (src/common/config.h).
 *
 * The input is written to a temp YAML file and read with config_load_file() + config_resolve()
 * (nesting, ${...} interpolation, validation). Each input line of the form name=value is also
 * applied with config_set() to a fresh configuration, which is then resolved. Invariants: every
 * error names the problem (errstr non-empty); a configuration that resolves prints with
 * config_print() into YAML that config_load_file() reads back.
 */
#include "../fuzz_replay.h"

#include "common/config.h"
#include "common/err.h"

#include <string.h>
#include <unistd.h>

static char yaml_path[4096];
static char print_path[4096];

static void remove_temp_files(void)
{
    unlink(yaml_path);
    unlink(print_path);
}

static void make_temp(char *path, size_t size, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, size, "%s/flowd-fuzz-%s-XXXXXX", dir && dir[0] ? dir : "/tmp", name);
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    close(fd);
}

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    FUZZ_CHECK(fclose(f) == 0);
}

/* The printed configuration must load back. */
static void check_print_loads(const struct flowd_config *cfg)
{
    FILE *f = fopen(print_path, "wb");
    FUZZ_CHECK(f != NULL);
    config_print(cfg, f);
    FUZZ_CHECK(fclose(f) == 0);
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct flowd_config *back = config_new();
    int rc = config_load_file(back, print_path, errstr, sizeof(errstr));
    if (rc)
        fprintf(stderr, "config_print output does not load back: %s\n", errstr);
    FUZZ_CHECK(rc == 0);
    config_free(back);
}

static void load_file(const uint8_t *data, size_t size)
{
    write_file(yaml_path, data, size);
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct flowd_config *cfg = config_new();
    if (config_load_file(cfg, yaml_path, errstr, sizeof(errstr))) {
        FUZZ_CHECK(errstr[0] != '\0');
        config_free(cfg);
        return;
    }
    if (config_resolve(cfg, errstr, sizeof(errstr))) {
        FUZZ_CHECK(errstr[0] != '\0');
    } else {
        FUZZ_CHECK(cfg->subscription_regex != NULL && cfg->dlq_topic != NULL);
        check_print_loads(cfg);
    }
    config_free(cfg);
}

/* Every line with a '=' is a `--set name=value`. */
static void set_lines(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    char errstr[FLOWD_ERRSTR_SIZE] = "";
    struct flowd_config *cfg = config_new();
    int nset = 0;
    char *line = text;
    while (line && line < text + size) {
        char *nl = memchr(line, '\n', (size_t)(text + size - line));
        if (nl)
            *nl = '\0';
        char *eq = strchr(line, '=');
        if (eq) {
            *eq = '\0';
            errstr[0] = '\0';
            if (config_set(cfg, line, eq + 1, errstr, sizeof(errstr)))
                FUZZ_CHECK(errstr[0] != '\0');
            else
                nset++;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (nset) {
        errstr[0] = '\0';
        if (config_resolve(cfg, errstr, sizeof(errstr)))
            FUZZ_CHECK(errstr[0] != '\0');
        else
            check_print_loads(cfg);
    }
    config_free(cfg);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!yaml_path[0]) {
        make_temp(yaml_path, sizeof(yaml_path), "config");
        make_temp(print_path, sizeof(print_path), "print");
        atexit(remove_temp_files);
    }
    load_file(data, size);
    set_lines(data, size);
    return 0;
}
