/* cli.h - flowctl: the command-line client of flowd's HTTP API (libcurl + cJSON).
 *
 * Exit codes: 0 done; 1 the server refused or failed the request (4xx/5xx, message on stderr);
 * 2 bad usage; 3 the server could not be reached; 4 `start --wait` saw the instance end other
 * than FINISHED (FAILED, TERMINATED).
 */
#ifndef FLOWD_CLI_H
#define FLOWD_CLI_H

#include "../common/buf.h"
#include "../common/json.h"

#include <stdint.h>

enum cli_exit {
    CLI_OK = 0,
    CLI_FAILED = 1,
    CLI_USAGE = 2,
    CLI_UNREACHABLE = 3,
    CLI_NOT_FINISHED = 4
};

struct cli {
    const char *server; /* http://127.0.0.1:8080 */
    const char *token;  /* bearer token or NULL */
    int json;           /* --json: print the server's JSON as is */
    double timeout_s;   /* per request */
};

/* One request. body may be NULL. On success returns 0 with *status and *out (JSON or NULL when
 * the body is not JSON; text in raw when raw is not NULL). Returns CLI_UNREACHABLE with a message
 * on stderr when the server cannot be reached. */
int cli_http(const struct cli *c,
             const char *method,
             const char *path,
             const char *body,
             long *status,
             cJSON **out,
             struct buf *raw);
/* Does the request and, on 4xx/5xx, prints the error body's detail and returns CLI_FAILED. */
int cli_call(
    const struct cli *c, const char *method, const char *path, const char *body, cJSON **out);
/* Prints o as indented JSON on stdout. */
void cli_print_json(const cJSON *o);
/* Reads a whole file ("-" = stdin); NULL with a message on stderr. */
char *cli_read_file(const char *path);
/* Number member as long long (0 if absent). */
long long cli_num(const cJSON *o, const char *name);
/* String member or "-". */
const char *cli_str(const cJSON *o, const char *name);

/* Commands: argc/argv start at the command's own arguments (argv[0] is the command name). */
int cli_deploy(struct cli *c, int argc, char **argv);
int cli_validate(struct cli *c, int argc, char **argv);
int cli_defs(struct cli *c, int argc, char **argv);
int cli_start(struct cli *c, int argc, char **argv);
int cli_get(struct cli *c, int argc, char **argv);
int cli_ls(struct cli *c, int argc, char **argv);
int cli_history(struct cli *c, int argc, char **argv);
int cli_cancel(struct cli *c, int argc, char **argv);
int cli_retry(struct cli *c, int argc, char **argv);
int cli_deliver(struct cli *c, int argc, char **argv);
int cli_dlq(struct cli *c, int argc, char **argv);
int cli_metrics(struct cli *c, int argc, char **argv);

/* Command options: --name VALUE (value != NULL) or --name (flag != NULL). */
struct cli_opt {
    const char *name;
    const char **value;
    int *flag;
};
/* Parses argv[1..] into opts and up to max positional arguments (pos, *npos). --json is taken
 * (global). Prints the problem and usage to stderr and returns CLI_USAGE on a bad option or when
 * the positional count is outside [min, max]. */
int cli_parse(int argc,
              char **argv,
              const struct cli_opt *opts,
              const char **pos,
              int min,
              int max,
              int *npos,
              const char *usage);

/* 1 if argv has -h/--help (then prints usage and the caller returns CLI_OK). */
int cli_wants_help(int argc, char **argv, const char *usage);

#endif
