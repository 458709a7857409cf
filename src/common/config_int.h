/* config_int.h - shared by config.c and config_yaml.c only; the rest of flowd uses config.h. */
#ifndef FLOWD_CONFIG_INT_H
#define FLOWD_CONFIG_INT_H

#include "config.h"

/* Where a raw value came from, lowest precedence first: a value never replaces one set by a
 * higher source, so the order of the config_* calls does not matter. */
enum config_src {
    CONFIG_SRC_DEFAULT = 0,
    CONFIG_SRC_FILE = 1,
    CONFIG_SRC_ENV = 2,
    CONFIG_SRC_ENV_FLOWD = 3,
    CONFIG_SRC_SET = 4,
};

/* Sets the raw value of a key (or of a kafka.properties.<name> entry) from source src; origin
 * ("flowd.yaml:12", "environment variable HTTP_PORT", "--set") is quoted by later errors.
 * Unknown keys fail with a "did you mean" hint when a known key is close. */
int config_set_from(struct flowd_config *cfg,
                    const char *name,
                    const char *value,
                    enum config_src src,
                    const char *origin,
                    char *errstr,
                    size_t errstr_size);

/* Checks that name is a known key or kafka.properties.<name>, without setting anything. */
int config_check_key(const char *name, char *errstr, size_t errstr_size);

#endif
