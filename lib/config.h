/* Configuration from command-line flags (getopt_long), each with a PRINTFARM_*
 * environment variable derived from its name (--admin-listen ->
 * PRINTFARM_ADMIN_LISTEN). Precedence: flag, then environment, then default; an
 * empty variable counts as unset. Long flags must be spelled out in full.
 * `--help` prints every flag with its variable, default and help text. */
#ifndef PF_CONFIG_H
#define PF_CONFIG_H

#include <stdint.h>
#include <stdio.h>
#include "status.h"

enum pf_flag_type {
    PF_FLAG_STRING,      /* dest: char ** (heap copy, freed by pf_config_release) */
    PF_FLAG_INT,         /* dest: int64_t *, decimal, range checked by min/max */
    PF_FLAG_BOOL,        /* dest: bool *; "--name" alone, or "true/false/1/0/yes/no" */
    PF_FLAG_SIZE,        /* dest: uint64_t *; bytes with optional K, M, G suffix (1024-based) */
    PF_FLAG_DURATION_MS, /* dest: int64_t * milliseconds; suffix ms, s, m, h (no suffix = ms) */
};

struct pf_flag {
    const char *name; /* long option name without dashes: "admin-listen" */
    enum pf_flag_type type;
    void *dest;
    const char *def;  /* default in the flag's text form; NULL = unset (string NULL / 0) */
    const char *help; /* one line */
    int64_t min, max; /* for INT, SIZE, DURATION_MS; both 0 = unchecked */
};

struct pf_config {
    const char *program; /* "pf-files" */
    const char *summary; /* one line printed under the usage line */
    const struct pf_flag *flags;
    size_t flag_count;
};

/* Returns PF_OK when configured; PF_E_END when --help was given and help was
 * printed to `out` (the caller exits 0); PF_E_INVALID with a message naming the
 * flag or variable when a value is bad or a flag unknown (the caller prints it
 * and exits 2). Positional arguments are rejected unless `positional` is not
 * NULL, in which case *positional_index receives optind. argv is permuted as GNU
 * getopt does, so positional arguments end up at argv[*positional_index..].
 * Destinations are written only on PF_OK. Not thread-safe (getopt's globals). */
enum pf_status pf_config_parse(const struct pf_config *cfg, int argc, char **argv, FILE *out,
                               int *positional_index, struct pf_error *err) PF_MUST_CHECK;

/* Frees the strings stored by PF_FLAG_STRING flags and sets them to NULL. Call
 * it before parsing again into the same destinations: parsing overwrites them
 * without freeing. */
void pf_config_release(const struct pf_config *cfg);

/* The environment variable name of a flag: "admin-listen" -> "PRINTFARM_ADMIN_LISTEN". */
void pf_config_env_name(const char *flag, char *out, size_t out_size);

/* Parsers used by the flags, exposed for tests and for other modules: PF_E_INVALID
 * for text that is not a size/duration, PF_E_OUT_OF_RANGE when it overflows. */
enum pf_status pf_config_parse_size(const char *text, uint64_t *out) PF_MUST_CHECK;
enum pf_status pf_config_parse_duration_ms(const char *text, int64_t *out) PF_MUST_CHECK;

/* Splits "HOST:PORT" ("[::1]:7400" too) and checks port 0..65535. host_out gets
 * the host without brackets. */
enum pf_status pf_config_parse_hostport(const char *text, char *host_out, size_t host_size,
                                        int *port_out, struct pf_error *err) PF_MUST_CHECK;

#endif
