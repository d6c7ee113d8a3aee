/* The Marlin host protocol engine: line cleaning and numbering, the send
 * window with its history ring for resends, the reply classifier and the
 * timeout/probe recovery, all as functions over struct pf_marlin with no I/O
 * so that every path (including the hostile ones) is unit-tested without a
 * printer. The one rule everything here leans on: a line number is never
 * reused for a different command between two `M110 N0` resets, so the
 * firmware's own line-number check turns every doubt (a lost line, a lost ok,
 * a duplicate) into a `Resend:` that names exactly what it still needs. */
#include "marlin_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_WINDOW      1
#define DEFAULT_HISTORY     64
#define DEFAULT_TIMEOUT_MS  30000
#define DEFAULT_PROBES      3
#define DEFAULT_MAX_RESENDS 10
#define DEFAULT_GARBAGE_RUN 100
#define DEFAULT_PROBE       "M105"
#define DEFAULT_CANCEL      "M104 S0\nM140 S0\nM107\nM84"
#define TIMEOUT_MAX_MS      (24LL * 3600 * 1000)
#define PROBES_MAX          100
#define PROBES_OUT_MAX      1000
#define LINE_NUMBER_LIMIT   2000000000u /* resync before a 32-bit signed long overflows */
#define RESEND_NUMBER_MAX   2147483647u
#define TEMP_MIN            (-300.0)
#define TEMP_MAX            2000.0
#define ERROR_TEXT_MAX      160

/* One numbered line as it went out, kept so a resend repeats it byte for byte. */
struct hist_entry {
    uint32_t n;
    bool from_file;
    bool sync;           /* the `M110 N0` line that resets numbering */
    bool reports_temps;  /* M105: its ok carries temperatures, like a probe's */
    uint64_t file_end;   /* file bytes consumed through this line (from_file only) */
    uint64_t file_index; /* 1-based ordinal of the file command (from_file only) */
    size_t len;
    char text[PF_MARLIN_OUT_MAX];
};

/* A line awaiting its ok. rejected: the firmware already asked for a resend
 * at or before it, so its ok carries no acceptance. */
struct flight {
    uint32_t n;
    bool rejected;
};

struct command {
    size_t len;
    char text[PF_MARLIN_CMD_MAX + 1];
};

struct pf_marlin {
    struct pf_marlin_config cfg; /* strings point to probe/cancel below */
    struct command probe;
    struct command cancel[PF_MARLIN_INJECT_MAX];
    unsigned cancel_count;

    enum pf_marlin_state state;
    struct pf_error error;

    /* numbering: lines [hist_lo, next_new) are in hist; send_pos < next_new
     * while lines are being sent again */
    bool need_sync;
    uint32_t next_new;
    uint32_t send_pos;
    uint32_t hist_lo;
    struct hist_entry *hist; /* cfg.history entries, indexed by n % cfg.history */

    struct flight fifo[PF_MARLIN_WINDOW_MAX]; /* lines awaiting their ok, oldest first */
    unsigned fifo_head;
    unsigned fifo_len;

    bool probing;        /* a silence is being probed: no new lines until answered */
    unsigned probes_out; /* probes whose ok has not been seen (some may be lost) */
    unsigned attempts;   /* probes since something understood was heard */
    int64_t last_activity_ms;

    struct command inject[PF_MARLIN_INJECT_MAX];
    unsigned inject_head;
    unsigned inject_count;

    /* the file */
    struct pf_marlin_source src;
    bool source_done;
    bool have_pending; /* a cleaned file command read ahead */
    struct command pending;
    uint64_t pending_end;   /* file bytes through the pending command */
    uint64_t consumed;      /* file bytes read from the source */
    uint64_t file_commands; /* file commands handed out so far */
    bool fence_sent;        /* the M105 that closes the file went out ... */
    bool fence_acked;       /* ... and the firmware took it */
    uint32_t fence_n;
    struct pf_marlin_progress progress;

    uint32_t streak_line; /* the line the last genuine resend asked for */
    unsigned streak_count;
    unsigned bad_resend_run; /* resend requests in a row that cannot be met */
    unsigned garbage_run;
    char last_fw_error[ERROR_TEXT_MAX];

    struct pf_marlin_temps temps;
    struct pf_marlin_stats stats;
};

/* ---------------------------------------------------------------- helpers */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool has_prefix(const char *s, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    return n >= p && memcmp(s, prefix, p) == 0;
}

static bool has_prefix_ci(const char *s, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    if (n < p)
        return false;
    for (size_t i = 0; i < p; i++) {
        if (lower(s[i]) != lower(prefix[i]))
            return false;
    }
    return true;
}

static bool contains_ci(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++) {
        if (has_prefix_ci(s + i, n - i, needle))
            return true;
    }
    return false;
}

/* Copies printable text into out for a message a person reads. */
static void sanitize(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    out[o] = '\0';
}

/* A decimal like "-15", "205.13": sign, at most 6 integer and 6 fraction
 * digits, nothing else. No strtod: it depends on the locale and takes "nan". */
static bool parse_decimal(const char *s, size_t n, double *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) {
        neg = s[i] == '-';
        i++;
    }
    double v = 0;
    size_t int_digits = 0;
    while (i < n && is_digit(s[i])) {
        if (++int_digits > 6)
            return false;
        v = v * 10 + (s[i] - '0');
        i++;
    }
    size_t frac_digits = 0;
    if (i < n && s[i] == '.') {
        i++;
        double scale = 0.1;
        while (i < n && is_digit(s[i])) {
            if (++frac_digits > 6)
                return false;
            v += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
    }
    if (i != n || int_digits + frac_digits == 0)
        return false;
    v = neg ? -v : v;
    if (v < TEMP_MIN || v > TEMP_MAX)
        return false;
    *out = v;
    return true;
}

/* A line number: optional spaces and 'N', 1..10 digits, optional spaces. */
static bool parse_line_number(const char *s, size_t n, uint32_t *out)
{
    size_t i = 0;
    while (i < n && s[i] == ' ')
        i++;
    if (i < n && (s[i] == 'N' || s[i] == 'n'))
        i++;
    uint64_t v = 0;
    size_t digits = 0;
    while (i < n && is_digit(s[i])) {
        if (++digits > 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
        i++;
    }
    while (i < n && s[i] == ' ')
        i++;
    if (digits == 0 || i != n || v > RESEND_NUMBER_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

/* ------------------------------------------------------- line preparation */

uint8_t pf_marlin_checksum(const char *s, size_t len)
{
    uint8_t cs = 0;
    for (size_t i = 0; i < len; i++)
        cs ^= (uint8_t)s[i];
    return cs;
}

enum pf_status pf_marlin_clean_line(const char *raw, size_t len, char *out, size_t cap,
                                    size_t *out_len, struct pf_error *err)
{
    *out_len = 0;
    if (out == NULL || cap < PF_MARLIN_CMD_MAX + 1)
        return pf_error_set(err, PF_E_INVALID, "command buffer of %zu bytes is too small", cap);
    out[0] = '\0';
    if (raw == NULL)
        len = 0;
    size_t end = len;
    for (size_t i = 0; i < len; i++) {
        if (raw[i] == ';' || raw[i] == '*') {
            end = i;
            break;
        }
    }
    size_t b = 0;
    while (b < end && is_blank(raw[b]))
        b++;
    if (b + 1 < end && (raw[b] == 'N' || raw[b] == 'n') && is_digit(raw[b + 1])) {
        size_t j = b + 1;
        while (j < end && is_digit(raw[j]))
            j++;
        if (j == end || is_blank(raw[j])) {
            b = j;
            while (b < end && is_blank(raw[b]))
                b++;
        }
    }
    while (end > b && is_blank(raw[end - 1]))
        end--;
    for (size_t i = b; i < end; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (is_control(c))
            return pf_error_set(err, PF_E_INVALID,
                                "control byte 0x%02x at column %zu (not a text gcode file?)", c,
                                i + 1);
    }
    size_t n = end - b;
    if (n > PF_MARLIN_CMD_MAX)
        return pf_error_set(err, PF_E_RESOURCE, "command of %zu bytes, more than the %d allowed", n,
                            PF_MARLIN_CMD_MAX);
    for (size_t i = 0; i < n; i++)
        out[i] = raw[b + i] == '\t' ? ' ' : raw[b + i];
    out[n] = '\0';
    *out_len = n;
    return PF_OK;
}

enum pf_status pf_marlin_format_line(uint32_t n, const char *cmd, size_t cmd_len, char *out,
                                     size_t cap, size_t *out_len)
{
    *out_len = 0;
    int head = snprintf(out, cap, "N%u ", (unsigned)n);
    if (head < 0 || (size_t)head + cmd_len + 6 > cap)
        return PF_E_RESOURCE;
    memcpy(out + head, cmd, cmd_len);
    size_t body = (size_t)head + cmd_len;
    uint8_t cs = pf_marlin_checksum(out, body);
    int tail = snprintf(out + body, cap - body, "*%u\n", (unsigned)cs);
    if (tail < 0 || body + (size_t)tail >= cap)
        return PF_E_RESOURCE;
    *out_len = body + (size_t)tail;
    return PF_OK;
}

/* True when cmd's first word is M105, the temperature report: the only
 * command whose ok carries temperatures. */
static bool is_m105(const char *cmd, size_t len)
{
    if (len < 4 || (cmd[0] != 'M' && cmd[0] != 'm') || memcmp(cmd + 1, "105", 3) != 0)
        return false;
    return len == 4 || !is_digit(cmd[4]);
}

/* True when cmd's first word is M110 (the engine owns line numbering). */
static bool is_m110(const char *cmd, size_t len)
{
    if (len < 4 || (cmd[0] != 'M' && cmd[0] != 'm') || memcmp(cmd + 1, "110", 3) != 0)
        return false;
    return len == 4 || !is_digit(cmd[4]);
}

/* ---------------------------------------------------------- reply parsing */

static struct pf_marlin_temp *temp_slot(struct pf_marlin_temps *t, const char *key, size_t n,
                                        struct pf_marlin_temp *active)
{
    if (n == 1 && key[0] == 'T')
        return active;
    if (n == 1 && key[0] == 'B')
        return &t->bed;
    if (n == 1 && key[0] == 'C')
        return &t->chamber;
    if (n == 2 && key[0] == 'T' && key[1] >= '0' && key[1] < '0' + PF_MARLIN_TOOLS_MAX)
        return &t->tool[key[1] - '0'];
    return NULL;
}

/* Reads "KEY:actual[ /target]" tokens (T, T0..T7, B, C; others skipped) from
 * s. Malformed values are skipped one by one. True when anything was read. */
static bool parse_temps(const char *s, size_t n, struct pf_marlin_temps *t)
{
    struct pf_marlin_temp active = {0};
    bool any = false;
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < n && s[i] != ' ')
            i++;
        const char *tok = s + start;
        size_t tlen = i - start;
        const char *colon = memchr(tok, ':', tlen);
        if (colon == NULL || colon == tok)
            continue;
        size_t klen = (size_t)(colon - tok);
        const char *val = colon + 1;
        size_t vlen = tlen - klen - 1;
        const char *slash = memchr(val, '/', vlen);
        const char *target = NULL;
        size_t target_len = 0;
        if (slash != NULL) {
            target = slash + 1;
            target_len = vlen - (size_t)(slash - val) - 1;
            vlen = (size_t)(slash - val);
        } else {
            size_t j = i;
            while (j < n && s[j] == ' ')
                j++;
            if (j < n && s[j] == '/') {
                size_t k = j + 1;
                while (k < n && s[k] != ' ')
                    k++;
                target = s + j + 1;
                target_len = k - j - 1;
                i = k;
            }
        }
        struct pf_marlin_temp *slot = temp_slot(t, tok, klen, &active);
        double actual;
        if (slot == NULL || !parse_decimal(val, vlen, &actual))
            continue;
        slot->valid = true;
        slot->actual = actual;
        double goal;
        if (target != NULL && parse_decimal(target, target_len, &goal)) {
            slot->has_target = true;
            slot->target = goal;
        }
        any = true;
    }
    /* "T:" is the active hotend; with no "T0:" in the report it is tool 0. */
    if (active.valid && !t->tool[0].valid)
        t->tool[0] = active;
    return any;
}

static bool starts_temps(const char *s, size_t n)
{
    if (n >= 2 && (s[0] == 'T' || s[0] == 'B' || s[0] == 'C') && s[1] == ':')
        return true;
    return n >= 3 && s[0] == 'T' && is_digit(s[1]) && s[2] == ':';
}

static const char *const info_prefixes[] = {
    "wait",
    "SD printing byte",
    "Not SD printing",
    "//",
    "FIRMWARE_NAME:",
    "Cap:",
    "X:",
    "Done printing",
    "File opened",
    "File selected",
    "Writing to file",
    "Done saving",
    "Begin file list",
    "End file list",
};

/* Marlin ends its line errors with ", Last Line: N": the line it has. */
static void parse_last_line(const char *s, size_t n, struct pf_marlin_reply *out)
{
    static const char key[] = "last line:";
    for (size_t i = 0; i + sizeof key - 1 <= n; i++) {
        if (has_prefix_ci(s + i, n - i, key)) {
            size_t at = i + sizeof key - 1;
            out->has_last_line = parse_line_number(s + at, n - at, &out->last_line) &&
                                 out->last_line < RESEND_NUMBER_MAX;
            return;
        }
    }
}

static void classify_error(const char *s, size_t n, struct pf_marlin_reply *out)
{
    static const char *const line_errors[] = {"line number is not", "no checksum", "no line number",
                                              "expected line", "format error"};
    static const char *const fatal[] = {"kill() called",
                                        "halted",
                                        "thermal runaway",
                                        "mintemp",
                                        "maxtemp",
                                        "heating failed",
                                        "thermal malfunction",
                                        "printer stopped",
                                        "system stopped",
                                        "emergency stop",
                                        "m999"};
    out->text = s;
    out->text_len = n;
    out->kind = PF_MARLIN_REPLY_ERROR;
    if (contains_ci(s, n, "checksum mismatch")) {
        out->error_kind = PF_MARLIN_ERR_CHECKSUM;
        parse_last_line(s, n, out);
        return;
    }
    for (size_t i = 0; i < sizeof line_errors / sizeof line_errors[0]; i++) {
        if (contains_ci(s, n, line_errors[i])) {
            out->error_kind = PF_MARLIN_ERR_LINE_NUMBER;
            parse_last_line(s, n, out);
            return;
        }
    }
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
        if (contains_ci(s, n, fatal[i])) {
            out->kind = PF_MARLIN_REPLY_FATAL;
            return;
        }
    }
    out->error_kind = PF_MARLIN_ERR_OTHER;
}

static void set_text(struct pf_marlin_reply *out, const char *s, size_t n)
{
    while (n > 0 && *s == ' ') {
        s++;
        n--;
    }
    out->text = s;
    out->text_len = n;
}

/* True for printable ASCII holding at least 4 letters. */
static bool plain_words(const char *s, size_t n)
{
    size_t letters = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f)
            return false;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            letters++;
    }
    return letters >= 4;
}

void pf_marlin_parse_reply(const char *line, size_t len, struct pf_marlin_reply *out)
{
    memset(out, 0, sizeof *out);
    out->text = "";
    if (line == NULL)
        len = 0;
    if (len > PF_MARLIN_REPLY_MAX) {
        out->truncated = true;
        out->kind = PF_MARLIN_REPLY_GARBAGE;
        return;
    }
    size_t b = 0;
    size_t e = len;
    while (b < e && (line[b] == ' ' || line[b] == '\t'))
        b++;
    while (e > b && (line[e - 1] == ' ' || line[e - 1] == '\t' || line[e - 1] == '\r'))
        e--;
    if (b == e) {
        out->kind = PF_MARLIN_REPLY_EMPTY;
        return;
    }
    for (size_t i = b; i < e; i++) {
        if (is_control((unsigned char)line[i])) {
            out->kind = PF_MARLIN_REPLY_GARBAGE;
            return;
        }
    }
    const char *s = line + b;
    size_t n = e - b;
    out->text = s;
    out->text_len = n;

    if (has_prefix(s, n, "ok") && (n == 2 || s[2] == ' ')) {
        out->kind = PF_MARLIN_REPLY_OK;
        out->has_temps = parse_temps(s + 2, n - 2, &out->temps);
        return;
    }
    if (has_prefix(s, n, "Resend:") || has_prefix(s, n, "resend:") || has_prefix(s, n, "rs ")) {
        size_t skip = s[1] == 'e' ? 7 : 3;
        if (parse_line_number(s + skip, n - skip, &out->resend_line))
            out->kind = PF_MARLIN_REPLY_RESEND;
        else
            out->kind = PF_MARLIN_REPLY_OTHER;
        return;
    }
    if (has_prefix_ci(s, n, "error:")) {
        set_text(out, s + 6, n - 6);
        classify_error(out->text, out->text_len, out);
        return;
    }
    if (has_prefix(s, n, "!!")) {
        /* RepRapFirmware/Klipper fatal; two '!' are easy for noise to make,
         * so it takes a message of plain ASCII words to count */
        set_text(out, s + 2, n - 2);
        out->kind =
            plain_words(out->text, out->text_len) ? PF_MARLIN_REPLY_FATAL : PF_MARLIN_REPLY_OTHER;
        return;
    }
    if (has_prefix_ci(s, n, "echo:")) {
        set_text(out, s + 5, n - 5);
        out->kind = has_prefix_ci(out->text, out->text_len, "busy:") ? PF_MARLIN_REPLY_BUSY
                                                                     : PF_MARLIN_REPLY_ECHO;
        return;
    }
    if (has_prefix_ci(s, n, "busy:")) {
        out->kind = PF_MARLIN_REPLY_BUSY;
        return;
    }
    if (n == 5 && memcmp(s, "start", 5) == 0) {
        out->kind = PF_MARLIN_REPLY_START;
        return;
    }
    if (starts_temps(s, n)) {
        out->has_temps = parse_temps(s, n, &out->temps);
        out->kind = out->has_temps ? PF_MARLIN_REPLY_TEMPS : PF_MARLIN_REPLY_OTHER;
        return;
    }
    for (size_t i = 0; i < sizeof info_prefixes / sizeof info_prefixes[0]; i++) {
        if (has_prefix(s, n, info_prefixes[i])) {
            out->kind = PF_MARLIN_REPLY_INFO;
            return;
        }
    }
    out->kind = PF_MARLIN_REPLY_OTHER;
}

/* ------------------------------------------------------------- the source */

void pf_marlin_text_init(struct pf_marlin_text *t, const char *data, size_t len)
{
    t->data = data;
    t->len = data == NULL ? 0 : len;
    t->pos = 0;
}

enum pf_status pf_marlin_text_next(void *ctx, const char **line, size_t *len, uint64_t *consumed,
                                   struct pf_error *err)
{
    struct pf_marlin_text *t = ctx;
    (void)err; /* memory cannot fail */
    if (t->pos >= t->len)
        return PF_E_END;
    const char *start = t->data + t->pos;
    size_t left = t->len - t->pos;
    const char *nl = memchr(start, '\n', left);
    size_t n = nl == NULL ? left : (size_t)(nl - start);
    *line = start;
    *len = n;
    *consumed = nl == NULL ? n : n + 1;
    t->pos += (size_t)*consumed;
    return PF_OK;
}

/* ------------------------------------------------------------- the engine */

void pf_marlin_config_init(struct pf_marlin_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->window = DEFAULT_WINDOW;
    cfg->history = DEFAULT_HISTORY;
    cfg->reply_timeout_ms = DEFAULT_TIMEOUT_MS;
    cfg->probe_attempts = DEFAULT_PROBES;
    cfg->max_resends = DEFAULT_MAX_RESENDS;
    cfg->max_garbage_run = DEFAULT_GARBAGE_RUN;
    cfg->probe_command = DEFAULT_PROBE;
    cfg->cancel_gcode = DEFAULT_CANCEL;
}

static enum pf_status load_cancel(struct pf_marlin *m, const char *text, struct pf_error *err)
{
    const char *p = text;
    unsigned line = 0;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl == NULL ? strlen(p) : (size_t)(nl - p);
        line++;
        struct command c;
        struct pf_error why;
        if (pf_marlin_clean_line(p, n, c.text, sizeof c.text, &c.len, &why) != PF_OK)
            return pf_error_set(err, PF_E_INVALID, "cancel gcode line %u: %s", line, why.msg);
        if (is_m110(c.text, c.len))
            return pf_error_set(err, PF_E_INVALID,
                                "cancel gcode line %u: M110 is sent by the engine itself", line);
        if (c.len > 0) {
            if (m->cancel_count == PF_MARLIN_INJECT_MAX)
                return pf_error_set(err, PF_E_INVALID, "cancel gcode has more than %d commands",
                                    PF_MARLIN_INJECT_MAX);
            m->cancel[m->cancel_count++] = c;
        }
        p += nl == NULL ? n : n + 1;
    }
    return PF_OK;
}

enum pf_status pf_marlin_create(const struct pf_marlin_config *cfg, struct pf_marlin **out,
                                struct pf_error *err)
{
    *out = NULL;
    struct pf_marlin_config c;
    if (cfg == NULL)
        pf_marlin_config_init(&c);
    else
        c = *cfg;
    if (c.probe_command == NULL)
        c.probe_command = DEFAULT_PROBE;
    if (c.cancel_gcode == NULL)
        c.cancel_gcode = DEFAULT_CANCEL;
    unsigned history_min =
        2 * c.window > PF_MARLIN_HISTORY_MIN ? 2 * c.window : PF_MARLIN_HISTORY_MIN;
    if (c.window < 1 || c.window > PF_MARLIN_WINDOW_MAX)
        return pf_error_set(err, PF_E_INVALID, "marlin window %u is not in 1..%d", c.window,
                            PF_MARLIN_WINDOW_MAX);
    if (c.history < history_min || c.history > PF_MARLIN_HISTORY_MAX)
        return pf_error_set(err, PF_E_INVALID, "marlin history %u is not in %u..%d", c.history,
                            history_min, PF_MARLIN_HISTORY_MAX);
    if (c.reply_timeout_ms < 1 || c.reply_timeout_ms > TIMEOUT_MAX_MS)
        return pf_error_set(err, PF_E_INVALID, "marlin reply timeout %lld ms is not in 1..%lld",
                            (long long)c.reply_timeout_ms, (long long)TIMEOUT_MAX_MS);
    if (c.probe_attempts > PROBES_MAX)
        return pf_error_set(err, PF_E_INVALID, "marlin probe attempts %u is more than %d",
                            c.probe_attempts, PROBES_MAX);
    if (c.max_resends < 1 || c.max_garbage_run < 1)
        return pf_error_set(err, PF_E_INVALID, "marlin resend and garbage limits must be > 0");

    struct pf_marlin *m = calloc(1, sizeof *m);
    if (m == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for the marlin engine");
    enum pf_status st;
    struct pf_error why;
    if (pf_marlin_clean_line(c.probe_command, strlen(c.probe_command), m->probe.text,
                             sizeof m->probe.text, &m->probe.len, &why) != PF_OK ||
        m->probe.len == 0 || is_m110(m->probe.text, m->probe.len)) {
        st = pf_error_set(err, PF_E_INVALID, "marlin probe command '%.40s' is not a command",
                          c.probe_command);
        goto out_free_engine;
    }
    st = load_cancel(m, c.cancel_gcode, err);
    if (st != PF_OK)
        goto out_free_engine;
    m->hist = calloc(c.history, sizeof *m->hist);
    if (m->hist == NULL) {
        st = pf_error_set(err, PF_E_RESOURCE, "out of memory for %u history lines", c.history);
        goto out_free_engine;
    }
    c.probe_command = m->probe.text;
    c.cancel_gcode = NULL; /* kept parsed in m->cancel */
    m->cfg = c;
    m->state = PF_MARLIN_IDLE;
    m->need_sync = true;
    m->streak_line = UINT32_MAX;
    pf_error_clear(&m->error);
    *out = m;
    return PF_OK;

out_free_engine:
    free(m);
    return st;
}

void pf_marlin_destroy(struct pf_marlin *m)
{
    if (m == NULL)
        return;
    free(m->hist);
    free(m);
}

static struct hist_entry *hist_at(struct pf_marlin *m, uint32_t n)
{
    return &m->hist[n % m->cfg.history];
}

static bool in_history(const struct pf_marlin *m, uint32_t n)
{
    return n >= m->hist_lo && n < m->next_new;
}

static bool is_sync(struct pf_marlin *m, uint32_t n)
{
    return in_history(m, n) && hist_at(m, n)->sync;
}

static struct flight *fifo_at(struct pf_marlin *m, unsigned i)
{
    return &m->fifo[(m->fifo_head + i) % PF_MARLIN_WINDOW_MAX];
}

static void fifo_clear(struct pf_marlin *m)
{
    m->fifo_head = 0;
    m->fifo_len = 0;
}

static struct flight fifo_pop(struct pf_marlin *m)
{
    struct flight f = *fifo_at(m, 0);
    m->fifo_head = (m->fifo_head + 1) % PF_MARLIN_WINDOW_MAX;
    m->fifo_len--;
    return f;
}

static bool waiting(const struct pf_marlin *m)
{
    return m->fifo_len > 0 || m->probing;
}

static bool drained(const struct pf_marlin *m)
{
    return m->send_pos == m->next_new && m->fifo_len == 0 && !m->probing;
}

static bool print_active(const struct pf_marlin *m)
{
    return m->state == PF_MARLIN_PRINTING || m->state == PF_MARLIN_PAUSED ||
           m->state == PF_MARLIN_CANCELLING;
}

static void drop_print(struct pf_marlin *m)
{
    m->src.next = NULL;
    m->src.ctx = NULL;
    m->source_done = true;
    m->have_pending = false;
}

/* Forgets everything in flight and every queued command: after an error or
 * when the firmware restarted. */
static void drop_link(struct pf_marlin *m)
{
    fifo_clear(m);
    m->probing = false;
    m->probes_out = 0;
    m->attempts = 0;
    m->send_pos = m->next_new;
    /* The numbering starts over, so no line sent so far may go again: a late
     * or noisy "Resend:" must not replay a forgotten print's line (or credit
     * its progress); one for an old number is now out of range. */
    m->hist_lo = m->next_new;
    m->need_sync = true;
}

static enum pf_status fail_va(struct pf_marlin *m, enum pf_status code, const char *fmt, va_list ap)
{
    if (m->state == PF_MARLIN_ERROR)
        return code;
    char msg[PF_ERROR_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pf_error_set(&m->error, code, "%s", msg);
    m->state = PF_MARLIN_ERROR;
    drop_print(m);
    drop_link(m);
    m->inject_count = 0;
    return code;
}

static enum pf_status fail(struct pf_marlin *m, enum pf_status code, const char *fmt, ...)
    PF_PRINTF(3, 4);

static enum pf_status fail(struct pf_marlin *m, enum pf_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_va(m, code, fmt, ap);
    va_end(ap);
    return code;
}

enum pf_status pf_marlin_set_error(struct pf_marlin *m, enum pf_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_va(m, code, fmt, ap);
    va_end(ap);
    return code;
}

/* The firmware took line n (its ok came, or it asked for a later line). */
static void accept_line(struct pf_marlin *m, uint32_t n)
{
    if (n == m->streak_line)
        m->streak_count = 0;
    if (m->fence_sent && n == m->fence_n)
        m->fence_acked = true;
    if (!in_history(m, n))
        return;
    const struct hist_entry *h = hist_at(m, n);
    if (!h->from_file)
        return;
    if (h->file_end > m->progress.bytes_acked)
        m->progress.bytes_acked = h->file_end;
    if (h->file_index > m->progress.lines_acked)
        m->progress.lines_acked = h->file_index;
}

static void update_state(struct pf_marlin *m)
{
    if (m->state == PF_MARLIN_PRINTING && m->source_done && !m->have_pending &&
        (m->fence_acked || m->file_commands == 0) && drained(m)) {
        /* the firmware took the closing M105, so every line before it */
        m->state = PF_MARLIN_DONE;
        m->progress.bytes_acked = m->consumed;
        m->progress.lines_acked = m->file_commands;
        drop_print(m);
    } else if (m->state == PF_MARLIN_CANCELLING && m->inject_count == 0 && drained(m)) {
        m->state = PF_MARLIN_CANCELLED;
    }
}

static void heard(struct pf_marlin *m, int64_t now_ms)
{
    m->last_activity_ms = now_ms;
    m->attempts = 0;
    m->garbage_run = 0;
}

/* A probe was answered. The firmware works in order, so whatever was sent
 * before the probe and still awaits an ok was lost or had its ok lost: send
 * it again from the oldest; the lines it already took come back refused by
 * number ("Resend:" for the next one), so nothing runs twice. */
static void probe_answered(struct pf_marlin *m)
{
    m->probes_out--;
    m->probing = false;
    while (m->fifo_len > 0) {
        struct flight f = fifo_pop(m);
        if (f.n < m->send_pos && in_history(m, f.n))
            m->send_pos = f.n;
    }
}

/* Whose ok is it? The firmware answers in the order things went out, so
 * normally the oldest line's. But a probe follows lines that may have been
 * lost, so while a probe is out an ok that may be its answer is taken as
 * such: one with temperatures for an M105 probe (the default), any ok when no
 * line is out for another probe command. Taking a line's ok for a probe's
 * only sends the line again (refused by number if it ran); the reverse could
 * end a print early, and the M105 that closes a file is what must never be
 * credited by mistake. So oks are also matched by shape: an M105's ok carries
 * temperatures and no other command's does; an ok of the wrong shape for the
 * oldest line is a stray (noise, a late ok after a recovery, a garbled
 * probe's) and is counted, not trusted. */
static void handle_ok(struct pf_marlin *m, const struct pf_marlin_reply *r)
{
    m->stats.oks++;
    bool temps_probe = is_m105(m->probe.text, m->probe.len);
    bool probes_answer =
        m->fifo_len == 0 ? r->has_temps || !temps_probe : r->has_temps && temps_probe;
    if (m->probes_out > 0 && probes_answer) {
        probe_answered(m);
        return;
    }
    if (m->fifo_len == 0) {
        m->stats.unexpected_oks++;
        return;
    }
    struct flight *front = fifo_at(m, 0);
    bool front_m105 = in_history(m, front->n) && hist_at(m, front->n)->reports_temps;
    if (!front->rejected && front_m105 != r->has_temps) {
        m->stats.unexpected_oks++;
        return;
    }
    struct flight f = fifo_pop(m);
    if (f.rejected)
        return;
    if (m->probing && is_sync(m, f.n)) {
        /* taken while probing, this ok may be a garbled probe's; every later
         * line depends on the numbering reset, so send it again rather than
         * guess (M110 is not line-checked: a repeat is harmless) */
        if (f.n < m->send_pos)
            m->send_pos = f.n;
        return;
    }
    m->bad_resend_run = 0;
    accept_line(m, f.n);
}

static void handle_resend(struct pf_marlin *m, uint32_t r)
{
    struct flight *front = m->fifo_len > 0 ? fifo_at(m, 0) : NULL;
    bool front_sync = front != NULL && is_sync(m, front->n);
    /* A number past anything sent since M110 N0 means the reset never took
     * (its ok was a guess), so no line after it was taken either. */
    bool old_numbering =
        front_sync || (r > m->next_new && m->hist_lo == 0 && m->next_new > 0 && is_sync(m, 0));
    if (!old_numbering && (r > m->next_new || r < m->hist_lo)) {
        /* a request that cannot be met; noise can fake one, a firmware that
         * means it says it again (Marlin twice per refused line) */
        if (++m->bad_resend_run < 2) {
            if (front != NULL)
                front->rejected = true; /* its ok proves nothing now */
            m->stats.resends_ignored++;
            return;
        }
        if (r > m->next_new)
            fail(m, PF_E_DATA_LOSS,
                 "the printer asked to resend line %u, which was never sent (next line is %u)",
                 (unsigned)r, (unsigned)m->next_new);
        else
            fail(m, PF_E_DATA_LOSS,
                 "the printer asked to resend line %u, which is no longer kept (lines %u..%u "
                 "are)",
                 (unsigned)r, (unsigned)m->hist_lo, (unsigned)(m->next_new - 1));
        return;
    }
    if (front != NULL && front->rejected) {
        /* a line sent before the firmware's first complaint, refused as expected */
        m->stats.resends_ignored++;
        return;
    }
    m->bad_resend_run = 0;
    /* with the old numbering the firmware's number means nothing here: send
     * everything again from the M110 */
    uint32_t target = front_sync ? front->n : old_numbering ? 0 : r;
    if (target == m->streak_line) {
        m->streak_count++;
    } else {
        m->streak_line = target;
        m->streak_count = 1;
    }
    if (m->streak_count > m->cfg.max_resends) {
        fail(m, PF_E_ABORTED, "the printer refused line %u %u times in a row (last error: %s)",
             (unsigned)target, m->streak_count,
             m->last_fw_error[0] != '\0' ? m->last_fw_error : "none given");
        return;
    }
    for (unsigned i = 0; i < m->fifo_len; i++)
        fifo_at(m, i)->rejected = true;
    if (!old_numbering && target > 0)
        accept_line(m, target - 1);
    m->send_pos = target;
    m->stats.resends++;
}

static void handle_start(struct pf_marlin *m)
{
    /* Before the first file line the print has not begun on the printer: a
     * board that resets when its port opens says "start" right then. */
    if (print_active(m) && (m->file_commands > 0 || m->state == PF_MARLIN_CANCELLING)) {
        fail(m, PF_E_ABORTED,
             "printer reset during print (the firmware restarted and sent "
             "'start'; power loss, watchdog or a reset by the serial port?)");
        return;
    }
    /* between prints a restart only means the numbering starts over */
    drop_link(m);
}

static void merge_temps(struct pf_marlin *m, const struct pf_marlin_temps *t, int64_t now_ms)
{
    for (int i = 0; i < PF_MARLIN_TOOLS_MAX; i++) {
        if (t->tool[i].valid)
            m->temps.tool[i] = t->tool[i];
    }
    if (t->bed.valid)
        m->temps.bed = t->bed;
    if (t->chamber.valid)
        m->temps.chamber = t->chamber;
    m->temps.updated_ms = now_ms;
    m->stats.temp_reports++;
}

void pf_marlin_feed_reply(struct pf_marlin *m, const char *line, size_t len, int64_t now_ms,
                          struct pf_marlin_reply *out)
{
    struct pf_marlin_reply local;
    struct pf_marlin_reply *r = out != NULL ? out : &local;
    pf_marlin_parse_reply(line, len, r);
    switch (r->kind) {
    case PF_MARLIN_REPLY_EMPTY:
        m->stats.empty_lines++;
        return;
    case PF_MARLIN_REPLY_OTHER:
        m->stats.other_lines++;
        return;
    case PF_MARLIN_REPLY_GARBAGE:
        m->stats.garbage_lines++;
        if (r->truncated)
            m->stats.long_lines++;
        m->garbage_run++;
        if (m->state != PF_MARLIN_ERROR && m->garbage_run >= m->cfg.max_garbage_run)
            fail(m, PF_E_IO,
                 "the printer sends unreadable data (%u garbage lines in a row; wrong baud "
                 "rate or a noisy cable?)",
                 m->garbage_run);
        return;
    default:
        break;
    }
    if (r->has_temps)
        merge_temps(m, &r->temps, now_ms);
    if (m->state == PF_MARLIN_ERROR)
        return; /* counted and temperatures kept, but nothing changes any more */
    heard(m, now_ms);
    switch (r->kind) {
    case PF_MARLIN_REPLY_OK:
        handle_ok(m, r);
        break;
    case PF_MARLIN_REPLY_RESEND:
        handle_resend(m, r->resend_line);
        break;
    case PF_MARLIN_REPLY_BUSY:
        m->stats.busy++;
        break;
    case PF_MARLIN_REPLY_ECHO:
        m->stats.echo_lines++;
        break;
    case PF_MARLIN_REPLY_ERROR:
        if (r->error_kind == PF_MARLIN_ERR_CHECKSUM)
            m->stats.checksum_errors++;
        else if (r->error_kind == PF_MARLIN_ERR_LINE_NUMBER)
            m->stats.line_number_errors++;
        else
            m->stats.firmware_errors++;
        sanitize(r->text, r->text_len, m->last_fw_error, sizeof m->last_fw_error);
        /* the same request as the "Resend:" that follows; acting on both
         * (the second is ignored) keeps working when one of them is lost */
        if (r->has_last_line)
            handle_resend(m, r->last_line + 1);
        break;
    case PF_MARLIN_REPLY_FATAL: {
        char text[ERROR_TEXT_MAX];
        sanitize(r->text, r->text_len, text, sizeof text);
        fail(m, PF_E_ABORTED, "firmware halted the printer: %s", text);
        break;
    }
    case PF_MARLIN_REPLY_START:
        handle_start(m);
        break;
    default:
        break; /* TEMPS, INFO: heard, nothing else */
    }
    update_state(m);
}

/* Reads ahead to the next file command, if any; false when there is none now. */
static bool fetch_file_command(struct pf_marlin *m)
{
    if (m->have_pending)
        return true;
    while (!m->source_done) {
        const char *raw = NULL;
        size_t raw_len = 0;
        uint64_t used = 0;
        struct pf_error why;
        pf_error_clear(&why);
        enum pf_status st = m->src.next(m->src.ctx, &raw, &raw_len, &used, &why);
        if (st == PF_E_END) {
            m->source_done = true;
            return false;
        }
        if (st != PF_OK) {
            fail(m, st, "could not read the gcode file after line %u: %s",
                 (unsigned)m->progress.file_line, why.msg[0] != '\0' ? why.msg : "read failed");
            return false;
        }
        m->consumed += used;
        m->progress.file_line++;
        if (pf_marlin_clean_line(raw, raw_len, m->pending.text, sizeof m->pending.text,
                                 &m->pending.len, &why) != PF_OK) {
            fail(m, PF_E_INVALID, "gcode line %u: %s", (unsigned)m->progress.file_line, why.msg);
            return false;
        }
        if (m->pending.len == 0 || is_m110(m->pending.text, m->pending.len)) {
            m->stats.skipped_file_lines++;
            continue;
        }
        m->have_pending = true;
        m->pending_end = m->consumed;
        return true;
    }
    return false;
}

/* Writes history line n to out and puts it in flight. */
static void emit(struct pf_marlin *m, uint32_t n, int64_t now_ms, char *out, size_t *len)
{
    const struct hist_entry *h = hist_at(m, n);
    memcpy(out, h->text, h->len + 1);
    *len = h->len;
    struct flight *f = fifo_at(m, m->fifo_len);
    f->n = n;
    f->rejected = false;
    m->fifo_len++;
    m->last_activity_ms = now_ms;
    m->stats.lines_written++;
}

/* Numbers cmd as the next new line and keeps it in history. */
static struct hist_entry *add_line(struct pf_marlin *m, const char *cmd, size_t cmd_len, bool sync)
{
    uint32_t n = m->next_new;
    struct hist_entry *h = hist_at(m, n);
    if (pf_marlin_format_line(n, cmd, cmd_len, h->text, sizeof h->text, &h->len) != PF_OK) {
        /* cannot happen: commands are bounded by PF_MARLIN_CMD_MAX */
        fail(m, PF_E_INTERNAL, "line %u does not fit the output buffer", (unsigned)n);
        return NULL;
    }
    h->n = n;
    h->sync = sync;
    h->reports_temps = is_m105(cmd, cmd_len);
    h->from_file = false;
    h->file_end = 0;
    h->file_index = 0;
    m->next_new = n + 1;
    m->send_pos = m->next_new;
    if (m->next_new - m->hist_lo > m->cfg.history)
        m->hist_lo = m->next_new - m->cfg.history;
    return h;
}

enum next_line { NEXT_NONE, NEXT_INJECT, NEXT_FILE, NEXT_FENCE };

/* What the next new line would be. The file ends with the fence: a numbered
 * M105 that the firmware takes only after every earlier line, so its ok (one
 * with temperatures: a stray or misread ok cannot pass for it) proves the
 * whole file arrived, whatever happened to the oks before it. */
static enum next_line next_new_line(struct pf_marlin *m)
{
    if (m->inject_count > 0)
        return NEXT_INJECT;
    if (m->state != PF_MARLIN_PRINTING)
        return NEXT_NONE;
    if (fetch_file_command(m))
        return NEXT_FILE;
    if (m->source_done && m->file_commands > 0 && !m->fence_sent && m->state == PF_MARLIN_PRINTING)
        return NEXT_FENCE;
    return NEXT_NONE;
}

static void emit_probe(struct pf_marlin *m, int64_t now_ms, char *out, size_t *len)
{
    m->probing = true;
    if (m->probes_out < PROBES_OUT_MAX)
        m->probes_out++;
    m->last_activity_ms = now_ms;
    memcpy(out, m->probe.text, m->probe.len);
    out[m->probe.len] = '\n';
    out[m->probe.len + 1] = '\0';
    *len = m->probe.len + 1;
    m->stats.probes++;
}

enum pf_status pf_marlin_next_output(struct pf_marlin *m, int64_t now_ms, char *out, size_t cap,
                                     size_t *len)
{
    *len = 0;
    if (out == NULL || cap < PF_MARLIN_OUT_MAX)
        return PF_E_INVALID;
    out[0] = '\0';
    if (m->state == PF_MARLIN_ERROR)
        return PF_OK;

    if (waiting(m) && now_ms - m->last_activity_ms >= m->cfg.reply_timeout_ms) {
        m->stats.timeouts++;
        m->attempts++;
        if (m->attempts > m->cfg.probe_attempts) {
            char extra[96] = "";
            if (m->garbage_run > 0)
                snprintf(extra, sizeof extra,
                         "; %u unreadable lines came instead (wrong baud rate?)", m->garbage_run);
            fail(m, PF_E_DEADLINE,
                 "firmware stopped answering: nothing understood for %lld ms after %u probe(s) "
                 "with %s%s",
                 (long long)(m->cfg.reply_timeout_ms * m->attempts), m->attempts - 1, m->probe.text,
                 extra);
            return PF_OK;
        }
        emit_probe(m, now_ms, out, len);
        return PF_OK;
    }
    if (m->probing || m->fifo_len >= m->cfg.window)
        return PF_OK;
    if (m->fifo_len > 0 && is_sync(m, fifo_at(m, 0)->n))
        return PF_OK; /* the numbering reset goes alone */

    if (m->send_pos < m->next_new) {
        m->stats.lines_resent++;
        emit(m, m->send_pos++, now_ms, out, len);
        return PF_OK;
    }
    if (!m->need_sync && m->next_new >= LINE_NUMBER_LIMIT)
        m->need_sync = true;
    enum next_line what = next_new_line(m);
    if (what == NEXT_NONE) {
        update_state(m);
        return PF_OK;
    }
    if (m->need_sync) {
        if (m->fifo_len > 0)
            return PF_OK;
        m->next_new = 0;
        m->hist_lo = 0;
        m->streak_line = UINT32_MAX;
        m->streak_count = 0;
        if (add_line(m, "M110 N0", 7, true) == NULL)
            return PF_OK;
        m->need_sync = false;
        emit(m, 0, now_ms, out, len);
        return PF_OK;
    }
    struct hist_entry *h = NULL;
    switch (what) {
    case NEXT_INJECT:
        h = add_line(m, m->inject[m->inject_head].text, m->inject[m->inject_head].len, false);
        m->inject_head = (m->inject_head + 1) % PF_MARLIN_INJECT_MAX;
        m->inject_count--;
        break;
    case NEXT_FILE:
        h = add_line(m, m->pending.text, m->pending.len, false);
        if (h != NULL) {
            m->have_pending = false;
            h->from_file = true;
            h->file_end = m->pending_end;
            h->file_index = ++m->file_commands;
            m->progress.bytes_sent = h->file_end;
            m->progress.lines_sent = h->file_index;
        }
        break;
    case NEXT_FENCE:
        h = add_line(m, "M105", 4, false);
        if (h != NULL) {
            m->fence_sent = true;
            m->fence_n = h->n;
        }
        break;
    case NEXT_NONE:
        break;
    }
    if (h != NULL)
        emit(m, h->n, now_ms, out, len);
    return PF_OK;
}

int64_t pf_marlin_wait_ms(const struct pf_marlin *m, int64_t now_ms)
{
    if (m->state == PF_MARLIN_ERROR || !waiting(m))
        return -1;
    int64_t left = m->last_activity_ms + m->cfg.reply_timeout_ms - now_ms;
    return left > 0 ? left : 0;
}

/* ------------------------------------------------------- print lifecycle */

enum pf_status pf_marlin_start(struct pf_marlin *m, const struct pf_marlin_source *src,
                               uint64_t total_bytes, struct pf_error *err)
{
    if (m->state == PF_MARLIN_ERROR)
        return pf_error_set(err, PF_E_PRECONDITION,
                            "cannot start a print in the error state (%s); reset first",
                            m->error.msg);
    if (print_active(m))
        return pf_error_set(err, PF_E_PRECONDITION, "a print is already %s",
                            pf_marlin_state_name(m->state));
    if (src == NULL || src->next == NULL)
        return pf_error_set(err, PF_E_INVALID, "no gcode source to print");
    m->src = *src;
    m->source_done = false;
    m->have_pending = false;
    m->consumed = 0;
    m->file_commands = 0;
    m->fence_sent = false;
    m->fence_acked = false;
    /* Lines of an earlier print still kept for resends stop being file lines:
     * a resend of one must not count toward this print's progress. */
    for (unsigned i = 0; i < m->cfg.history; i++)
        m->hist[i].from_file = false;
    memset(&m->progress, 0, sizeof m->progress);
    m->progress.bytes_total = total_bytes;
    m->need_sync = true;
    m->state = PF_MARLIN_PRINTING;
    return PF_OK;
}

enum pf_status pf_marlin_pause(struct pf_marlin *m, struct pf_error *err)
{
    if (m->state != PF_MARLIN_PRINTING)
        return pf_error_set(err, PF_E_PRECONDITION, "cannot pause: the printer is %s",
                            pf_marlin_state_name(m->state));
    m->state = PF_MARLIN_PAUSED;
    return PF_OK;
}

enum pf_status pf_marlin_resume(struct pf_marlin *m, struct pf_error *err)
{
    if (m->state != PF_MARLIN_PAUSED)
        return pf_error_set(err, PF_E_PRECONDITION, "cannot resume: the printer is %s",
                            pf_marlin_state_name(m->state));
    m->state = PF_MARLIN_PRINTING;
    return PF_OK;
}

enum pf_status pf_marlin_cancel(struct pf_marlin *m, struct pf_error *err)
{
    if (m->state == PF_MARLIN_CANCELLING)
        return PF_OK;
    if (m->state != PF_MARLIN_PRINTING && m->state != PF_MARLIN_PAUSED)
        return pf_error_set(err, PF_E_PRECONDITION, "cannot cancel: the printer is %s",
                            pf_marlin_state_name(m->state));
    drop_print(m);
    m->inject_head = 0;
    m->inject_count = m->cancel_count;
    for (unsigned i = 0; i < m->cancel_count; i++)
        m->inject[i] = m->cancel[i];
    m->state = PF_MARLIN_CANCELLING;
    update_state(m);
    return PF_OK;
}

enum pf_status pf_marlin_inject(struct pf_marlin *m, const char *cmd, struct pf_error *err)
{
    if (m->state == PF_MARLIN_ERROR)
        return pf_error_set(err, PF_E_PRECONDITION, "cannot send a command in the error state");
    if (cmd == NULL)
        return pf_error_set(err, PF_E_INVALID, "no command to send");
    struct command c;
    struct pf_error why;
    if (pf_marlin_clean_line(cmd, strlen(cmd), c.text, sizeof c.text, &c.len, &why) != PF_OK)
        return pf_error_set(err, PF_E_INVALID, "invalid command: %s", why.msg);
    if (c.len == 0)
        return pf_error_set(err, PF_E_INVALID, "empty command");
    if (is_m110(c.text, c.len))
        return pf_error_set(err, PF_E_INVALID, "M110 is sent by the engine itself");
    if (m->inject_count == PF_MARLIN_INJECT_MAX)
        return pf_error_set(err, PF_E_RESOURCE, "%d commands are already waiting to be sent",
                            PF_MARLIN_INJECT_MAX);
    m->inject[(m->inject_head + m->inject_count) % PF_MARLIN_INJECT_MAX] = c;
    m->inject_count++;
    return PF_OK;
}

void pf_marlin_reset(struct pf_marlin *m)
{
    drop_print(m);
    drop_link(m);
    memset(&m->progress, 0, sizeof m->progress);
    m->inject_count = 0;
    m->inject_head = 0;
    m->garbage_run = 0;
    m->streak_count = 0;
    m->bad_resend_run = 0;
    m->last_fw_error[0] = '\0';
    pf_error_clear(&m->error);
    m->state = PF_MARLIN_IDLE;
}

/* ---------------------------------------------------------------- queries */

enum pf_marlin_state pf_marlin_state(const struct pf_marlin *m)
{
    return m->state;
}

const char *pf_marlin_state_name(enum pf_marlin_state state)
{
    switch (state) {
    case PF_MARLIN_IDLE:
        return "idle";
    case PF_MARLIN_PRINTING:
        return "printing";
    case PF_MARLIN_PAUSED:
        return "paused";
    case PF_MARLIN_CANCELLING:
        return "cancelling";
    case PF_MARLIN_CANCELLED:
        return "cancelled";
    case PF_MARLIN_DONE:
        return "done";
    case PF_MARLIN_ERROR:
        return "error";
    }
    return "unknown";
}

const struct pf_error *pf_marlin_error(const struct pf_marlin *m)
{
    return &m->error;
}

void pf_marlin_progress(const struct pf_marlin *m, struct pf_marlin_progress *out)
{
    *out = m->progress;
    out->in_flight = m->fifo_len;
}

void pf_marlin_temps(const struct pf_marlin *m, struct pf_marlin_temps *out)
{
    *out = m->temps;
}

void pf_marlin_stats(const struct pf_marlin *m, struct pf_marlin_stats *out)
{
    *out = m->stats;
}
