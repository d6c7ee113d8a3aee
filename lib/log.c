/* The process logger: one line per event on stderr, `ts=... level=...
 * component=... event=...` followed by the caller's key=value text. Each line is
 * assembled in a stack buffer of at most PIPE_BUF bytes and written with one
 * write(2), so lines from concurrent threads (and processes sharing the pipe)
 * never interleave. Control characters in the formatted text are escaped
 * (a newline becomes the two characters \n) so that one event stays one line,
 * and an over-long line is cut on a UTF-8 boundary and marked truncated=true. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX      4096 /* == PIPE_BUF on Linux: a write this size is atomic */
#define LOG_COMPONENT_MAX 64

static const char truncated_mark[] = " truncated=true";

static atomic_int log_min_level = PF_LOG_INFO;
static char log_component[LOG_COMPONENT_MAX];

static const char *const level_names[] = {
    [PF_LOG_DEBUG] = "debug",
    [PF_LOG_INFO] = "info",
    [PF_LOG_WARN] = "warn",
    [PF_LOG_ERROR] = "error",
};

void pf_log_init(enum pf_log_level min_level, const char *component)
{
    atomic_store(&log_min_level, (int)min_level);
    if (component == NULL) {
        log_component[0] = '\0';
        return;
    }
    /* Only characters that need no quoting: the component is a program name. */
    size_t n = 0;
    for (const char *p = component; *p != '\0' && n + 1 < sizeof log_component; p++) {
        unsigned char c = (unsigned char)*p;
        log_component[n++] = (c > 0x20 && c < 0x7f && c != '"' && c != '=') ? (char)c : '_';
    }
    log_component[n] = '\0';
}

enum pf_status pf_log_level_parse(const char *text, enum pf_log_level *out)
{
    if (text == NULL)
        return PF_E_INVALID;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (enum pf_log_level)i;
            return PF_OK;
        }
    }
    return PF_E_INVALID;
}

bool pf_log_enabled(enum pf_log_level level)
{
    return (int)level >= atomic_load(&log_min_level);
}

/* The length of the longest prefix of s[0..len) that does not end inside a
 * UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len)
{
    size_t i = len;
    size_t back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = 1;
    if ((lead & 0xe0) == 0xc0)
        need = 2;
    else if ((lead & 0xf0) == 0xe0)
        need = 3;
    else if ((lead & 0xf8) == 0xf0)
        need = 4;
    else
        return len; /* ASCII or not UTF-8: nothing to protect */
    return back + 1 >= need ? len : i - 1;
}

/* Appends text to line[*len..cap), escaping control characters; stops (and
 * returns false) when the next character would not fit. */
static bool append_escaped(char *line, size_t *len, size_t cap, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    for (const char *p = text; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[4];
        size_t n;
        if (c == '\n') {
            memcpy(esc, "\\n", 2);
            n = 2;
        } else if (c == '\r') {
            memcpy(esc, "\\r", 2);
            n = 2;
        } else if (c == '\t') {
            memcpy(esc, "\\t", 2);
            n = 2;
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[c >> 4];
            esc[3] = hex[c & 0x0f];
            n = 4;
        } else {
            esc[0] = (char)c;
            n = 1;
        }
        if (*len + n > cap) {
            *len = utf8_cut(line, *len);
            return false;
        }
        memcpy(line + *len, esc, n);
        *len += n;
    }
    return true;
}

static void write_all(const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing stderr */
        }
        data += n;
        len -= (size_t)n;
    }
}

void pf_log(enum pf_log_level level, const char *event, const char *fmt, ...)
{
    if (!pf_log_enabled(level))
        return;
    int saved_errno = errno; /* callers log and then read errno */

    char line[LOG_LINE_MAX];
    /* Room for the truncation mark and the final newline is always kept. */
    const size_t cap = sizeof line - (sizeof truncated_mark - 1) - 1;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[32];
    size_t ts_len = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + ts_len, sizeof ts - ts_len, ".%03ldZ", now.tv_nsec / 1000000);

    const char *lvl =
        ((int)level >= PF_LOG_DEBUG && level <= PF_LOG_ERROR) ? level_names[level] : "unknown";
    int n;
    if (log_component[0] != '\0')
        n = snprintf(line, cap, "ts=%s level=%s component=%s event=", ts, lvl, log_component);
    else
        n = snprintf(line, cap, "ts=%s level=%s event=", ts, lvl);
    size_t len = n > 0 ? (size_t)n : 0;
    if (len >= cap)
        len = cap - 1;

    bool complete = append_escaped(line, &len, cap, event != NULL ? event : "unknown");
    if (complete && fmt != NULL) {
        /* The text may be longer than a line; format to a line's worth. */
        char text[LOG_LINE_MAX];
        va_list ap;
        va_start(ap, fmt);
        int tn = vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        if (tn > 0) {
            if ((size_t)tn >= sizeof text)
                text[utf8_cut(text, sizeof text - 1)] = '\0';
            if (len < cap)
                line[len++] = ' ';
            complete = append_escaped(line, &len, cap, text) && (size_t)tn < sizeof text;
        }
    }
    if (!complete) {
        memcpy(line + len, truncated_mark, sizeof truncated_mark - 1);
        len += sizeof truncated_mark - 1;
    }
    line[len++] = '\n';
    write_all(line, len);
    errno = saved_errno;
}

const char *pf_log_quote(const char *text, char *out, size_t out_size)
{
    if (out == NULL || out_size < 3)
        return "\"\"";
    if (text == NULL)
        text = "";
    size_t len = 0;
    out[len++] = '"';
    /* Keep room for the closing quote and the NUL. */
    const size_t cap = out_size - 2;
    for (const char *p = text; *p != '\0'; p++) {
        size_t need = (*p == '"' || *p == '\\') ? 2 : 1;
        if (len + need > cap) {
            len = utf8_cut(out, len);
            if (len == 0)
                len = 1;
            break;
        }
        if (need == 2)
            out[len++] = '\\';
        out[len++] = *p;
    }
    out[len++] = '"';
    out[len] = '\0';
    return out;
}
