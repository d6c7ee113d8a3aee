/* Logging: one line per event on stderr as key=value pairs with a level:
 *   ts=2026-11-27T21:03:53.123Z level=info event=upload_done digest=ab12.. bytes=42
 * The logger is one of the two allowed process globals; set it up once in main.
 * Thread-safe: each line is written with a single write(2). */
#ifndef PF_LOG_H
#define PF_LOG_H

#include "status.h"

enum pf_log_level { PF_LOG_DEBUG, PF_LOG_INFO, PF_LOG_WARN, PF_LOG_ERROR };

/* Sets the minimum level printed (default info) and the component name printed
 * as `component=NAME` on every line (may be NULL). Call once in main. */
void pf_log_init(enum pf_log_level min_level, const char *component);

/* Parses "debug", "info", "warn" or "error". */
enum pf_status pf_log_level_parse(const char *text, enum pf_log_level *out) PF_MUST_CHECK;

bool pf_log_enabled(enum pf_log_level level);

/* Logs `event` followed by the printf-formatted key=value text in fmt (may be
 * NULL). Values with spaces should be quoted by the caller with %s inside "...";
 * pf_log_quote helps. */
void pf_log(enum pf_log_level level, const char *event, const char *fmt, ...) PF_PRINTF(3, 4);

/* Writes `text` (NULL reads as "") into out as a double-quoted value with '"'
 * and '\\' escaped, for use as `key=%s`; a value too long for out is cut (on a
 * character boundary) and still closed with '"'. Returns out, which the caller
 * owns; out_size must be at least 3. */
const char *pf_log_quote(const char *text, char *out, size_t out_size);

#define pf_log_debug(ev, ...) pf_log(PF_LOG_DEBUG, ev, __VA_ARGS__)
#define pf_log_info(ev, ...)  pf_log(PF_LOG_INFO, ev, __VA_ARGS__)
#define pf_log_warn(ev, ...)  pf_log(PF_LOG_WARN, ev, __VA_ARGS__)
#define pf_log_error(ev, ...) pf_log(PF_LOG_ERROR, ev, __VA_ARGS__)

#endif
