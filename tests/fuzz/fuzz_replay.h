/* fuzz_replay.h - shared by every tests/fuzz/<target>/fuzz_<target>.c.
 *
 * FUZZ_CHECK(cond) aborts (so that libFuzzer and the replay both report a crash) when an
 * invariant of the code under test does not hold. With -DWITH_MAIN this header also defines a
 * main() that feeds LLVMFuzzerTestOneInput() every file named on the command line, or every
 * regular file of a named directory, so that the committed corpus replays under any compiler
 * (ctest `fuzz.replay.<target>`, built with the normal compiler and the sanitizers).
 */
#ifndef FLOWD_FUZZ_REPLAY_H
#define FLOWD_FUZZ_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* Returns a NUL-terminated copy of the input (the APIs under test take C strings). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    for (size_t i = 0; i < size; i++)
        s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#ifdef WITH_MAIN
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

/* Runs one file; returns 0 or -1 if it cannot be read. */
static int fuzz_replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            uint8_t *nb = realloc(buf, cap);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    /* An exact-size copy, so that ASan sees reads past the end of the input. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact)
        abort();
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int fuzz_replay_path(const char *path, int *nfiles)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: no such file or directory: %s\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*nfiles)++;
        return fuzz_replay_file(path);
    }
    DIR *dir = opendir(path);
    if (!dir) {
        fprintf(stderr, "replay: cannot open directory %s\n", path);
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        size_t plen = strlen(path) + strlen(de->d_name) + 2;
        char *full = malloc(plen);
        if (!full)
            abort();
        snprintf(full, plen, "%s/%s", path, de->d_name);
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
            (*nfiles)++;
            if (fuzz_replay_file(full))
                rc = -1;
        }
        free(full);
    }
    closedir(dir);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    int rc = 0, nfiles = 0;
    for (int i = 1; i < argc; i++)
        if (fuzz_replay_path(argv[i], &nfiles))
            rc = 1;
    if (nfiles == 0) {
        fprintf(stderr, "replay: no input files\n");
        return 1;
    }
    printf("replayed %d input(s)%s\n", nfiles, rc ? " (some unreadable)" : "");
    return rc;
}
#endif /* WITH_MAIN */

#endif
