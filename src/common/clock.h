/* clock.h - the only place outside tests that reads clocks and entropy. The engine never calls
 * these: time and ids come into it as arguments. */
#ifndef FLOWD_CLOCK_H
#define FLOWD_CLOCK_H

#include <stddef.h>
#include <stdint.h>

int64_t clock_wall_ms(void); /* milliseconds since the epoch */
int64_t clock_mono_us(void); /* monotonic microseconds */
/* Writes a random (v4) UUID, 36 chars + NUL, into out[37]. */
void clock_uuid4(char out[37]);
/* Formats epoch ms as ISO 8601 UTC "2026-11-23T10:00:00.123Z" into out (>= 32 bytes). Pure. */
void clock_iso8601(int64_t ms, char *out, size_t size);

#endif
