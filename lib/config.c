/* Command-line flags and their PRINTFARM_* environment twins, parsed with
 * getopt_long. Parsing runs in two passes: the first walks argv and only
 * remembers the text given for each flag (the last occurrence wins); the second
 * picks flag text, else the environment, else the default, converts it and
 * range-checks it. Destinations are written only once every flag converted, so a
 * failed parse leaves the caller's variables untouched. Long options must be
 * spelled out in full: getopt's prefix matching would let a script depend on an
 * abbreviation that a future flag makes ambiguous. An empty environment
 * variable counts as unset, as compose files write `PRINTFARM_X=` to clear one. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENV_NAME_MAX 128
#define HOST_MAX     256

/* Where the text of a flag's value came from, for error messages. */
enum source { SRC_NONE, SRC_DEFAULT, SRC_ENV, SRC_FLAG };

union value {
    char *str;
    int64_t i64;
    uint64_t u64;
    bool b;
};

void pf_config_env_name(const char *flag, char *out, size_t out_size)
{
    static const char prefix[] = "PRINTFARM_";
    if (out == NULL || out_size == 0)
        return;
    size_t n = 0;
    for (const char *p = prefix; *p != '\0' && n + 1 < out_size; p++)
        out[n++] = *p;
    for (const char *p = flag != NULL ? flag : ""; *p != '\0' && n + 1 < out_size; p++) {
        unsigned char c = (unsigned char)*p;
        out[n++] = isalnum(c) ? (char)toupper(c) : '_';
    }
    out[n] = '\0';
}

/* Reads an unsigned decimal number of at least one digit; returns the position
 * after it, or NULL on no digits or overflow (*overflow tells which). */
static const char *read_digits(const char *text, uint64_t *out, bool *overflow)
{
    uint64_t v = 0;
    const char *p = text;
    *overflow = false;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            v = v * 10 + d;
        p++;
    }
    if (p == text || *overflow)
        return NULL;
    *out = v;
    return p;
}

/* Each parser returns NULL on success or the reason the text is wrong. */
static const char *parse_int(const char *text, int64_t *out)
{
    const char *p = text;
    bool negative = false;
    if (*p == '-' || *p == '+')
        negative = *p++ == '-';
    if (*p < '0' || *p > '9')
        return "not a number";
    uint64_t mag;
    bool overflow;
    const char *end = read_digits(p, &mag, &overflow);
    if (end == NULL)
        return overflow ? "number too large" : "not a number";
    if (*end != '\0')
        return "not a number";
    if (negative) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return "number too large";
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return "number too large";
        *out = (int64_t)mag;
    }
    return NULL;
}

static const char *parse_size(const char *text, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},     {"B", 0},  {"K", 10}, {"k", 10},   {"KiB", 10}, {"M", 20}, {"m", 20},
        {"MiB", 20}, {"G", 30}, {"g", 30}, {"GiB", 30}, {"T", 40},   {"t", 40}, {"TiB", 40},
    };
    if (text[0] < '0' || text[0] > '9')
        return "not a size (use a number of bytes with an optional K, M, G or T suffix)";
    uint64_t v;
    bool overflow;
    const char *end = read_digits(text, &v, &overflow);
    if (end == NULL)
        return overflow ? "size too large" : "not a size";
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0)
            continue;
        if (units[i].shift > 0 && v > (UINT64_MAX >> units[i].shift))
            return "size too large";
        *out = v << units[i].shift;
        return NULL;
    }
    return "not a size (use a number of bytes with an optional K, M, G or T suffix)";
}

static const char *parse_duration(const char *text, int64_t *out)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000},
    };
    if (text[0] < '0' || text[0] > '9')
        return "not a duration (use a number with ms, s, m or h)";
    uint64_t v;
    bool overflow;
    const char *end = read_digits(text, &v, &overflow);
    if (end == NULL)
        return overflow ? "duration too long" : "not a duration";
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0)
            continue;
        if (v > (uint64_t)(INT64_MAX / units[i].ms))
            return "duration too long";
        *out = (int64_t)v * units[i].ms;
        return NULL;
    }
    return "not a duration (use a number with ms, s, m or h)";
}

static const char *parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return NULL;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return NULL;
        }
    }
    return "not a boolean (use true or false)";
}

enum pf_status pf_config_parse_size(const char *text, uint64_t *out)
{
    if (text == NULL)
        return PF_E_INVALID;
    const char *why = parse_size(text, out);
    if (why == NULL)
        return PF_OK;
    return strstr(why, "too large") != NULL ? PF_E_OUT_OF_RANGE : PF_E_INVALID;
}

enum pf_status pf_config_parse_duration_ms(const char *text, int64_t *out)
{
    if (text == NULL)
        return PF_E_INVALID;
    const char *why = parse_duration(text, out);
    if (why == NULL)
        return PF_OK;
    return strstr(why, "too long") != NULL ? PF_E_OUT_OF_RANGE : PF_E_INVALID;
}

enum pf_status pf_config_parse_hostport(const char *text, char *host_out, size_t host_size,
                                        int *port_out, struct pf_error *err)
{
    if (text == NULL || text[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "missing address: expected HOST:PORT");
    const char *host;
    size_t host_len;
    const char *colon;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL)
            return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': missing ']'", text);
        host = text + 1;
        host_len = (size_t)(close - host);
        if (close[1] != ':')
            return pf_error_set(err, PF_E_INVALID,
                                "invalid address '%.64s': expected ':PORT' after ']'", text);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return pf_error_set(err, PF_E_INVALID,
                                "invalid address '%.64s': missing port (expected HOST:PORT)", text);
        host = text;
        host_len = (size_t)(colon - text);
        if (memchr(host, ':', host_len) != NULL)
            return pf_error_set(err, PF_E_INVALID,
                                "invalid address '%.64s': put an IPv6 address in brackets, "
                                "as in [::1]:7400",
                                text);
    }
    if (host_len == 0)
        return pf_error_set(err, PF_E_INVALID,
                            "invalid address '%.64s': missing host (use 0.0.0.0 for every "
                            "interface)",
                            text);
    if (host_len >= HOST_MAX || host_len + 1 > host_size)
        return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': host too long", text);
    for (size_t i = 0; i < host_len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c >= 0x7f || c == '[' || c == ']' || c == '/')
            return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': bad character in host",
                                text);
    }
    const char *port_text = colon + 1;
    if (port_text[0] == '\0')
        return pf_error_set(err, PF_E_INVALID,
                            "invalid address '%.64s': missing port (expected HOST:PORT)", text);
    uint64_t port;
    bool overflow;
    const char *end = read_digits(port_text, &port, &overflow);
    if (end == NULL || *end != '\0') {
        if (overflow)
            return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': port must be 0..65535",
                                text);
        return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': port is not a number",
                            text);
    }
    if (port > 65535)
        return pf_error_set(err, PF_E_INVALID, "invalid address '%.64s': port must be 0..65535",
                            text);
    memcpy(host_out, host, host_len);
    host_out[host_len] = '\0';
    *port_out = (int)port;
    return PF_OK;
}

/* Describes the value's origin: "--port" or "PRINTFARM_PORT for --port". */
static void describe_source(const struct pf_flag *f, enum source src, char *out, size_t size)
{
    char env[ENV_NAME_MAX];
    switch (src) {
    case SRC_ENV:
        pf_config_env_name(f->name, env, sizeof env);
        snprintf(out, size, "in %s for --%s", env, f->name);
        break;
    case SRC_DEFAULT:
        snprintf(out, size, "in the default of --%s", f->name);
        break;
    default:
        snprintf(out, size, "for --%s", f->name);
        break;
    }
}

/* Converts the text of one flag into v, checking its range. */
static enum pf_status convert(const struct pf_flag *f, const char *text, enum source src,
                              union value *v, struct pf_error *err)
{
    const char *why = NULL;
    char range[96] = "";
    bool ranged = !(f->min == 0 && f->max == 0);
    switch (f->type) {
    case PF_FLAG_STRING:
        v->str = (char *)text;
        break;
    case PF_FLAG_BOOL:
        why = parse_bool(text, &v->b);
        break;
    case PF_FLAG_INT:
        why = parse_int(text, &v->i64);
        if (why == NULL && ranged && (v->i64 < f->min || v->i64 > f->max)) {
            snprintf(range, sizeof range, "must be between %" PRId64 " and %" PRId64, f->min,
                     f->max);
            why = range;
        }
        break;
    case PF_FLAG_SIZE:
        why = parse_size(text, &v->u64);
        if (why == NULL && ranged &&
            ((f->min > 0 && v->u64 < (uint64_t)f->min) ||
             (f->max < 0 || v->u64 > (uint64_t)f->max))) {
            snprintf(range, sizeof range, "must be between %" PRId64 " and %" PRId64 " bytes",
                     f->min, f->max);
            why = range;
        }
        break;
    case PF_FLAG_DURATION_MS:
        why = parse_duration(text, &v->i64);
        if (why == NULL && ranged && (v->i64 < f->min || v->i64 > f->max)) {
            snprintf(range, sizeof range, "must be between %" PRId64 "ms and %" PRId64 "ms", f->min,
                     f->max);
            why = range;
        }
        break;
    default:
        return pf_error_set(err, PF_E_INTERNAL, "flag '--%s' has an unknown type", f->name);
    }
    if (why == NULL)
        return PF_OK;
    char where[ENV_NAME_MAX + 96];
    describe_source(f, src, where, sizeof where);
    /* A bad default is a bug in the program, not in the operator's input. */
    enum pf_status code = src == SRC_DEFAULT ? PF_E_INTERNAL : PF_E_INVALID;
    return pf_error_set(err, code, "invalid value '%.64s' %s: %s", text, where, why);
}

static const char *metavar(enum pf_flag_type type)
{
    switch (type) {
    case PF_FLAG_INT:
        return " N";
    case PF_FLAG_BOOL:
        return "";
    case PF_FLAG_SIZE:
        return " SIZE";
    case PF_FLAG_DURATION_MS:
        return " DURATION";
    default:
        return " VALUE";
    }
}

static void print_help(const struct pf_config *cfg, bool positional, FILE *out)
{
    fprintf(out, "usage: %s [flags]%s\n", cfg->program != NULL ? cfg->program : "program",
            positional ? " [ARG...]" : "");
    if (cfg->summary != NULL && cfg->summary[0] != '\0')
        fprintf(out, "%s\n", cfg->summary);
    fprintf(out, "\nflags:\n");
    int width = (int)strlen("-h, --help");
    for (size_t i = 0; i < cfg->flag_count; i++) {
        const struct pf_flag *f = &cfg->flags[i];
        int w = (int)(strlen("--") + strlen(f->name) + strlen(metavar(f->type)));
        if (w > width)
            width = w;
    }
    char env[ENV_NAME_MAX];
    for (size_t i = 0; i < cfg->flag_count; i++) {
        const struct pf_flag *f = &cfg->flags[i];
        int w = (int)(strlen("--") + strlen(f->name) + strlen(metavar(f->type)));
        pf_config_env_name(f->name, env, sizeof env);
        fprintf(out, "  --%s%s%*s   %s (env %s", f->name, metavar(f->type), width - w, "",
                f->help != NULL ? f->help : "", env);
        if (f->def != NULL)
            fprintf(out, ", default: %s", f->def[0] != '\0' ? f->def : "\"\"");
        fprintf(out, ")\n");
    }
    fprintf(out, "  %-*s   print this help and exit\n", width, "-h, --help");
    fflush(out);
}

/* The flag name as typed in the argv element `token` ("--name" or
 * "--name=value"), without the dashes and the value. */
static bool token_names(const char *token, const char *name)
{
    if (strncmp(token, "--", 2) != 0)
        return false;
    token += 2;
    size_t len = strcspn(token, "=");
    return strlen(name) == len && strncmp(token, name, len) == 0;
}

static void quote_token(const char *token, char *out, size_t size)
{
    size_t len = strcspn(token, "=");
    if (len > 64)
        len = 64;
    snprintf(out, size, "%.*s", (int)len, token);
}

enum pf_status pf_config_parse(const struct pf_config *cfg, int argc, char **argv, FILE *out,
                               int *positional_index, struct pf_error *err)
{
    enum pf_status st = PF_OK;
    size_t n = cfg->flag_count;
    if (out == NULL)
        out = stdout;

    struct option *options = calloc(n + 2, sizeof *options);
    if (options == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory parsing flags");
    const char **given = calloc(n + 1, sizeof *given);
    if (given == NULL) {
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory parsing flags");
        goto out_free_options;
    }
    union value *values = calloc(n + 1, sizeof *values);
    if (values == NULL) {
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory parsing flags");
        goto out_free_given;
    }
    for (size_t i = 0; i < n; i++) {
        options[i].name = cfg->flags[i].name;
        options[i].has_arg =
            cfg->flags[i].type == PF_FLAG_BOOL ? optional_argument : required_argument;
        options[i].flag = NULL;
        options[i].val = 256 + (int)i;
    }
    options[n] = (struct option){"help", no_argument, NULL, 'h'};

    /* Pass 1: remember the text of each flag. optind = 0 fully resets glibc's
     * getopt, so parsing can run more than once in a process. */
    optind = 0;
    opterr = 0;
    char quoted[80];
    for (;;) {
        int index = -1;
        int c = getopt_long(argc, argv, ":h", options, &index);
        if (c == -1)
            break;
        if (c == 'h' && index >= 0 && !token_names(argv[optind - 1], "help")) {
            quote_token(argv[optind - 1], quoted, sizeof quoted);
            st = pf_error_set(err, PF_E_INVALID, "unknown flag '%s' (see --help)", quoted);
            goto out_free_values;
        }
        if (c == 'h') {
            print_help(cfg, positional_index != NULL, out);
            st = PF_E_END;
            goto out_free_values;
        }
        if (c == '?') {
            /* glibc sets optopt to 0 for an unknown long option (whose argv
             * element is then behind optind), to the option's value for a long
             * option given a value it does not take, and to the character for
             * an unknown short option. */
            if (optopt == 'h') {
                st = pf_error_set(err, PF_E_INVALID, "flag '--help' takes no value");
            } else if (optopt != 0) {
                st = pf_error_set(err, PF_E_INVALID, "unknown flag '-%c' (see --help)",
                                  (optopt < 128 && isprint(optopt)) ? optopt : '?');
            } else {
                quote_token(argv[optind - 1], quoted, sizeof quoted);
                st = pf_error_set(err, PF_E_INVALID, "unknown flag '%s' (see --help)", quoted);
            }
            goto out_free_values;
        }
        if (c == ':') {
            if (optopt >= 256 && (size_t)(optopt - 256) < n)
                st = pf_error_set(err, PF_E_INVALID, "missing value for --%s",
                                  cfg->flags[optopt - 256].name);
            else
                st = pf_error_set(err, PF_E_INVALID, "missing value for a flag (see --help)");
            goto out_free_values;
        }
        if (c < 256 || (size_t)(c - 256) >= n) {
            st = pf_error_set(err, PF_E_INTERNAL, "unexpected result %d from getopt_long", c);
            goto out_free_values;
        }
        size_t i = (size_t)(c - 256);
        /* Reject abbreviations: the option's own argv element must name it in full.
         * A value given as a separate word sits one element after it. */
        const char *token = argv[optind - 1];
        if (optarg != NULL && optarg == argv[optind - 1] && optind >= 2)
            token = argv[optind - 2];
        if (!token_names(token, cfg->flags[i].name)) {
            quote_token(token, quoted, sizeof quoted);
            st = pf_error_set(err, PF_E_INVALID, "unknown flag '%s' (see --help)", quoted);
            goto out_free_values;
        }
        given[i] = optarg != NULL ? optarg : "true";
    }
    if (optind < argc && positional_index == NULL) {
        st = pf_error_set(err, PF_E_INVALID, "unexpected argument '%.64s' (see --help)",
                          argv[optind]);
        goto out_free_values;
    }

    /* Pass 2: flag, then environment, then default; convert and check. */
    char env[ENV_NAME_MAX];
    for (size_t i = 0; i < n; i++) {
        const struct pf_flag *f = &cfg->flags[i];
        const char *text = given[i];
        enum source src = SRC_FLAG;
        if (text == NULL) {
            pf_config_env_name(f->name, env, sizeof env);
            text = getenv(env);
            src = SRC_ENV;
            if (text != NULL && text[0] == '\0')
                text = NULL;
        }
        if (text == NULL) {
            text = f->def;
            src = SRC_DEFAULT;
        }
        if (text == NULL) {
            memset(&values[i], 0, sizeof values[i]);
            continue;
        }
        st = convert(f, text, src, &values[i], err);
        if (st != PF_OK)
            goto out_free_values;
    }

    /* Copy the strings before touching any destination, so a failure leaves
     * every destination as it was. */
    size_t copied = 0;
    for (; copied < n; copied++) {
        if (cfg->flags[copied].type != PF_FLAG_STRING || values[copied].str == NULL)
            continue;
        values[copied].str = strdup(values[copied].str);
        if (values[copied].str == NULL)
            break;
    }
    if (copied < n) {
        for (size_t i = 0; i < copied; i++) {
            if (cfg->flags[i].type == PF_FLAG_STRING)
                free(values[i].str);
        }
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory copying flag values");
        goto out_free_values;
    }
    for (size_t i = 0; i < n; i++) {
        const struct pf_flag *f = &cfg->flags[i];
        if (f->dest == NULL) {
            if (f->type == PF_FLAG_STRING)
                free(values[i].str);
            continue;
        }
        switch (f->type) {
        case PF_FLAG_STRING:
            *(char **)f->dest = values[i].str;
            break;
        case PF_FLAG_BOOL:
            *(bool *)f->dest = values[i].b;
            break;
        case PF_FLAG_SIZE:
            *(uint64_t *)f->dest = values[i].u64;
            break;
        default:
            *(int64_t *)f->dest = values[i].i64;
            break;
        }
    }
    if (positional_index != NULL)
        *positional_index = optind;
    pf_error_clear(err);

out_free_values:
    free(values);
out_free_given:
    free(given);
out_free_options:
    free(options);
    return st;
}

void pf_config_release(const struct pf_config *cfg)
{
    for (size_t i = 0; i < cfg->flag_count; i++) {
        const struct pf_flag *f = &cfg->flags[i];
        if (f->type != PF_FLAG_STRING || f->dest == NULL)
            continue;
        free(*(char **)f->dest);
        *(char **)f->dest = NULL;
    }
}
