/* farmctl's shared declarations: the exit codes scripts rely on, the resolved
 * configuration (config.c), the per-run context with its lazily opened
 * channels (client.c), output helpers (output.c) and one entry point per
 * command group (bundle.c, jobs.c, printers.c, events.c, status.c). main.c
 * only dispatches. Single-threaded: nothing here is thread-safe. */
#ifndef FARMCTL_H
#define FARMCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "buf.h"
#include "rpc/client.h"
#include "status.h"

/* Exit codes, documented in `farmctl --help`. */
enum fc_exit {
    FC_EXIT_OK = 0,
    FC_EXIT_FAILED = 1,      /* a server refused or failed the request, or a local file did */
    FC_EXIT_USAGE = 2,       /* bad command line or configuration */
    FC_EXIT_UNREACHABLE = 3, /* a service could not be reached (or has no leader) */
};

#define FC_ADDRS_MAX 8

/* ---------------------------------------------------------------- config.c */

/* Resolved configuration. Precedence: flag, then PRINTFARM_* variable, then
 * the config file, then the default. Strings are heap copies owned here. */
struct fc_config {
    char *scheduler; /* "HOST:PORT[,HOST:PORT...]" */
    char *files;
    char *discovery; /* NULL: not configured */
    char *token;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_server_name;
    char *timeout; /* text form until resolved */
    int64_t timeout_ms;
    char *config;    /* --config / PRINTFARM_CONFIG */
    char *log_level; /* lib log level: warn by default */
    char *farm;      /* find the farm by this name (beacon or --discovery) */
    char *beacon_group;
    char *beacon_port; /* text form until resolved */
    int beacon_port_num;
    bool json;
    /* --farm: which addresses the lookup fills in (they were not given), and
     * whether it ran (fc_config_find_farm does it once, on first use). */
    bool farm_fill_scheduler, farm_fill_files, farm_fill_discovery, farm_found;
    char config_path[512]; /* the file actually read, "" when none */
    char *sched_addrs[FC_ADDRS_MAX];
    size_t n_sched_addrs;
};

/* One command: its name as typed ("job show"), synopsis, help text and
 * options (getopt_long; the global options are added by fc_parse). */
struct fc_cmd {
    const char *name;
    const char *synopsis; /* after "farmctl NAME " */
    const char *help;     /* option lines and a sentence or two */
    const struct option *opts;
};

/* Called by fc_parse for each option of the command's own table; returns
 * FC_EXIT_OK or FC_EXIT_USAGE after printing why (fc_usage). */
typedef int (*fc_opt_fn)(void *arg, int key, const char *value);

struct fc_ctx;

/* Handles one global option (key from the global table); true when key was
 * one. Used by main before the command word and by fc_parse after it. */
bool fc_config_global_opt(struct fc_config *cfg, int key, const char *value);
extern const struct option fc_global_options[];
/* Applies PRINTFARM_* variables and the config file, checks the result.
 * FC_EXIT_OK or FC_EXIT_USAGE after printing the reason. */
int fc_config_resolve(struct fc_config *cfg);
void fc_config_release(struct fc_config *cfg);
/* With --farm: finds the farm once (pf-discovery from the LAN beacon unless
 * --discovery is given, then the scheduler leader and pf-files from it) and
 * fills in the addresses that were not given. No-op without --farm or when
 * already done. FC_EXIT_OK, or FC_EXIT_UNREACHABLE after printing why.
 * Blocking for at most about cfg->timeout_ms. */
int fc_config_find_farm(struct fc_config *cfg);

/* Parses argv[1..] of a command (argv[0] is its last word) with its options
 * and the global ones, then resolves the configuration. On true,
 * argv[*first..argc) are the positional arguments. On false the caller
 * exits with *exit_code (0 after --help). */
bool fc_parse(struct fc_ctx *ctx, const struct fc_cmd *cmd, int argc, char **argv, fc_opt_fn fn,
              void *arg, int *first, int *exit_code);
/* Prints "farmctl: MESSAGE" and the command's usage line to stderr; returns
 * FC_EXIT_USAGE. */
int fc_usage(const struct fc_cmd *cmd, const char *fmt, ...) PF_PRINTF(2, 3);
void fc_print_help(FILE *out);
void fc_print_cmd_help(const struct fc_cmd *cmd, FILE *out);

/* Small parsers shared by commands: false on bad text. */
bool fc_parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *out);
bool fc_parse_i32(const char *text, int32_t *out);

/* ---------------------------------------------------------------- client.c */

struct fc_ctx {
    struct fc_config cfg;
    struct pf_rpc_channel *sched; /* NULL until the first scheduler call */
    size_t sched_index;           /* which of cfg.sched_addrs it was opened on */
    struct pf_rpc_channel *files;
    struct pf_rpc_channel *disc;
};

/* Channel options from the configuration (token, TLS). */
void fc_client_opts(const struct fc_ctx *ctx, struct pf_rpc_client_opts *out);
/* A unary call to the scheduler: tries each configured address in turn until
 * one answers, following the leader redirect (lib/rpc). On failure prints a
 * message a person can act on and returns the exit code; *reply is set only
 * on FC_EXIT_OK (free it with protobuf_c_message_free_unpacked). */
int fc_sched_call(struct fc_ctx *ctx, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_desc, ProtobufCMessage **reply);
/* The scheduler channel after a successful fc_sched_call (its target is the
 * leader). */
struct pf_rpc_channel *fc_sched_channel(struct fc_ctx *ctx);
/* pf-files and pf-discovery channels (created on first use); NULL after
 * printing why (exit code in *exit_code). fc_discovery requires cfg.discovery. */
struct pf_rpc_channel *fc_files(struct fc_ctx *ctx, int *exit_code);
struct pf_rpc_channel *fc_discovery(struct fc_ctx *ctx, int *exit_code);
/* Prints the failure of a call to SERVICE ("the scheduler", "pf-files") and
 * returns the exit code it maps to. */
int fc_report(const struct fc_ctx *ctx, const char *service, const char *target,
              const struct pf_error *err);
/* The exit code a failed call maps to (no printing). */
int fc_exit_for(enum pf_status code);
void fc_ctx_release(struct fc_ctx *ctx);

/* ---------------------------------------------------------------- output.c */

/* Aligned text tables for people. Cells are copied. */
struct fc_table;
struct fc_table *fc_table_create(size_t ncols, const char *const *headers);
void fc_table_add(struct fc_table *t, const char *const *cells);
void fc_table_print(const struct fc_table *t, FILE *out);
void fc_table_destroy(struct fc_table *t);

/* JSON for scripts: a streaming writer into a buffer. Field names of
 * protobuf messages are their .proto names; enums are the value name in
 * lower case without the enum's prefix ("queued", "awaiting_clear"); a
 * printfarm.v1.Digest is its hex string; every field is always present
 * (zero values included, unset messages and oneofs as null). */
struct fc_json {
    struct pf_buf buf;
    bool pretty;
    int depth;
    bool need_comma[64];
    bool after_key;
    bool failed; /* out of memory */
};
void fc_json_init(struct fc_json *j, bool pretty);
void fc_json_begin_object(struct fc_json *j);
void fc_json_end_object(struct fc_json *j);
void fc_json_begin_array(struct fc_json *j);
void fc_json_end_array(struct fc_json *j);
void fc_json_key(struct fc_json *j, const char *key);
void fc_json_string(struct fc_json *j, const char *s); /* NULL writes null */
void fc_json_int(struct fc_json *j, int64_t v);
void fc_json_uint(struct fc_json *j, uint64_t v);
void fc_json_double(struct fc_json *j, double v);
void fc_json_bool(struct fc_json *j, bool v);
void fc_json_null(struct fc_json *j);
void fc_json_message(struct fc_json *j, const ProtobufCMessage *m); /* NULL writes null */
/* Writes the document and a newline to out, releases the buffer; returns
 * FC_EXIT_OK or FC_EXIT_FAILED (out of memory, write error). */
int fc_json_print(struct fc_json *j, FILE *out);

/* "queued", "awaiting_clear": the enum value's short lower-case name, written
 * into buf (a number when the value is unknown). Returns buf. */
const char *fc_enum_name(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t size);
/* Parses a short name (any case, with or without the prefix) back. */
bool fc_enum_parse(const ProtobufCEnumDescriptor *d, const char *text, int *value);
/* Human formats, written into buf and returned: "3m 20s", "2026-11-27 22:05:01",
 * "12s ago" / "-", "65.7 KB". */
const char *fc_fmt_duration(uint64_t seconds, char *buf, size_t size);
const char *fc_fmt_time(int64_t unix_ms, char *buf, size_t size);
const char *fc_fmt_age(int64_t unix_ms, char *buf, size_t size);
const char *fc_fmt_size(uint64_t bytes, char *buf, size_t size);
/* Prints "farmctl: " + message to stderr. */
void fc_err(const char *fmt, ...) PF_PRINTF(1, 2);
void fc_warn(const char *fmt, ...) PF_PRINTF(1, 2);
/* Milliseconds since the Unix epoch, for ages. */
int64_t fc_now_ms(void);

/* -------------------------------------------------------------- commands */

int fc_cmd_bundle(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_submit(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_jobs(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_job(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_printers(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_printer(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_events(struct fc_ctx *ctx, int argc, char **argv);
int fc_cmd_status(struct fc_ctx *ctx, int argc, char **argv);

/* Lists of every job / printer, paging through ListJobs / ListPrinters
 * (jobs.c, printers.c; used by status.c). On FC_EXIT_OK *out holds
 * responses whose jobs/printers are all of them; free each with
 * protobuf_c_message_free_unpacked and the array with free(). */
struct fc_pages {
    ProtobufCMessage **pages;
    size_t n;
};
int fc_list_jobs(struct fc_ctx *ctx, const char *queue, const int *states, size_t n_states,
                 size_t limit, struct fc_pages *out);
int fc_list_printers(struct fc_ctx *ctx, const char *queue, const int *states, size_t n_states,
                     struct fc_pages *out);
void fc_pages_release(struct fc_pages *p);

#endif
