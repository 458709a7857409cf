/* version.h - version of the flowd connector SDK (libflowd-connector).
 *
 * The numbers are those of the flowd release the SDK ships with. FLOWD_VERSION is the header's
 * version at compile time; flowd_version() is the library's at run time.
 */
#ifndef FLOWD_PUBLIC_VERSION_H
#define FLOWD_PUBLIC_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef FLOWD_EXPORT
#if defined(FLOWD_BUILDING_SDK)
#define FLOWD_EXPORT __attribute__((visibility("default")))
#else
#define FLOWD_EXPORT
#endif
#endif

#define FLOWD_VERSION_MAJOR 0
#define FLOWD_VERSION_MINOR 1
#define FLOWD_VERSION_PATCH 0
/** Version as one number: 0xMMmmpp (major, minor, patch). */
#define FLOWD_VERSION \
    ((FLOWD_VERSION_MAJOR << 16) | (FLOWD_VERSION_MINOR << 8) | FLOWD_VERSION_PATCH)
#define FLOWD_VERSION_STR "0.1.0"

/**
 * @brief The library's version as FLOWD_VERSION encodes it.
 * @remark Thread-safe; may be called before anything else.
 */
FLOWD_EXPORT int flowd_version(void);

/**
 * @brief The library's version as a string, e.g. "0.1.0".
 * @returns a static string (never freed).
 * @remark Thread-safe.
 */
FLOWD_EXPORT const char *flowd_version_str(void);

#ifdef __cplusplus
}
#endif
#endif
