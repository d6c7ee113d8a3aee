/* The host side of the serial G-code protocol spoken by Marlin, Prusa and most
 * RepRap firmwares, as a pure state machine with no I/O: the caller writes
 * what pf_marlin_next_output hands out to the serial port and feeds every line
 * it reads back through pf_marlin_feed_reply, passing a monotonic clock. The
 * engine numbers every command (`N<n> <cmd>*<xor>`), keeps a bounded history
 * for `Resend:`/`rs`, keeps up to `window` lines in flight (one `ok` per
 * line), honours `busy:` keep-alives, parses temperature reports, turns fatal
 * firmware errors, a firmware reset during a print and a silent firmware into
 * an error state with a reason a person can act on, and never trusts the
 * device: every reply is bounded, classified and counted, and garbage never
 * moves progress backwards. See the comment above pf_marlin_next_output for
 * how a lost line or a lost `ok` is recovered. Not thread-safe: one thread
 * drives a struct pf_marlin. */
#ifndef PF_MARLIN_PROTO_H
#define PF_MARLIN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Longest command text (after comments and whitespace are stripped). */
#define PF_MARLIN_CMD_MAX 240
/* Room an output buffer needs: `N<10 digits> <cmd>*<3 digits>\n` and a NUL. */
#define PF_MARLIN_OUT_MAX 272
/* Replies longer than this are truncated and counted as garbage. */
#define PF_MARLIN_REPLY_MAX 512
/* Lines in flight at most; history entries kept for resends. */
#define PF_MARLIN_WINDOW_MAX  16
#define PF_MARLIN_HISTORY_MIN 8
#define PF_MARLIN_HISTORY_MAX 1024
/* Pending injected commands; lines of the cancel sequence. */
#define PF_MARLIN_INJECT_MAX 16
/* Hotends reported (T0..T7). */
#define PF_MARLIN_TOOLS_MAX 8

/* The engine: an opaque heap handle (pf_marlin_create / pf_marlin_destroy). */
struct pf_marlin;

enum pf_marlin_state {
    PF_MARLIN_IDLE,       /* no print; injected commands still flow */
    PF_MARLIN_PRINTING,   /* streaming the file */
    PF_MARLIN_PAUSED,     /* file lines held back; injected commands flow */
    PF_MARLIN_CANCELLING, /* file dropped; the cancel sequence is being sent */
    PF_MARLIN_CANCELLED,  /* the cancel sequence was acknowledged */
    PF_MARLIN_DONE,       /* the firmware took the whole file (see next_output) */
    PF_MARLIN_ERROR,      /* fatal: see pf_marlin_error; pf_marlin_reset to go on */
};

/* Settings; pf_marlin_config_init fills the defaults given in brackets. */
struct pf_marlin_config {
    unsigned window;           /* lines in flight, 1..PF_MARLIN_WINDOW_MAX [1] */
    unsigned history;          /* sent lines kept for Resend [64] */
    int64_t reply_timeout_ms;  /* silence while waiting before a probe [30000] */
    unsigned probe_attempts;   /* probes before "stopped answering" [3] */
    unsigned max_resends;      /* rejections of one line in a row before failing [10] */
    unsigned max_garbage_run;  /* unreadable lines in a row before failing [100] */
    const char *probe_command; /* sent unnumbered on a timeout ["M105"] */
    const char *cancel_gcode;  /* '\n'-separated, sent on cancel ["M104 S0\nM140 S0\nM107\nM84"] */
};

/* Pulls the next raw line of a gcode file for the engine. Sets *line (without
 * its line terminator; borrowed, valid until the next call), *len and
 * *consumed (bytes of the file this line used, terminator included; the sum
 * is the file's progress). Returns PF_OK, PF_E_END after the last line, or
 * another status (with err set) which puts the engine in the error state. */
struct pf_marlin_source {
    enum pf_status (*next)(void *ctx, const char **line, size_t *len, uint64_t *consumed,
                           struct pf_error *err);
    void *ctx; /* borrowed; must outlive the print */
};

/* A ready-made source over a file held in memory (mapped or read). Embedded by
 * value; data is borrowed and must outlive the print. Lines end at '\n'. */
struct pf_marlin_text {
    const char *data;
    size_t len;
    size_t pos;
};

void pf_marlin_text_init(struct pf_marlin_text *t, const char *data, size_t len);
/* The `next` function for a struct pf_marlin_text passed as ctx. */
enum pf_status pf_marlin_text_next(void *ctx, const char **line, size_t *len, uint64_t *consumed,
                                   struct pf_error *err);

struct pf_marlin_temp {
    bool valid;      /* reported at least once */
    bool has_target; /* a "/target" followed the reading */
    double actual;
    double target;
};

struct pf_marlin_temps {
    struct pf_marlin_temp tool[PF_MARLIN_TOOLS_MAX];
    struct pf_marlin_temp bed;
    struct pf_marlin_temp chamber;
    int64_t updated_ms; /* the clock of the last report folded in; 0 = never */
};

enum pf_marlin_reply_kind {
    PF_MARLIN_REPLY_EMPTY,   /* blank: ignored */
    PF_MARLIN_REPLY_GARBAGE, /* too long or with control bytes: counted, ignored */
    PF_MARLIN_REPLY_OTHER,   /* printable but not understood: ignored */
    PF_MARLIN_REPLY_OK,      /* "ok", maybe with temperatures or advanced-ok fields */
    PF_MARLIN_REPLY_RESEND,  /* "Resend: N" / "rs N" */
    PF_MARLIN_REPLY_BUSY,    /* "busy: processing" (also after "echo:") */
    PF_MARLIN_REPLY_ECHO,    /* "echo:..." */
    PF_MARLIN_REPLY_ERROR,   /* "Error:..." that the firmware recovers from */
    PF_MARLIN_REPLY_FATAL,   /* halted, kill(), thermal runaway, MINTEMP, "!!"... */
    PF_MARLIN_REPLY_START,   /* "start": the firmware (re)booted */
    PF_MARLIN_REPLY_TEMPS,   /* a temperature report without "ok" (M155, M109) */
    PF_MARLIN_REPLY_INFO,    /* another known line: "wait", "SD printing byte", "//action:" */
};

enum pf_marlin_error_kind {
    PF_MARLIN_ERR_NONE,
    PF_MARLIN_ERR_CHECKSUM,    /* "checksum mismatch" */
    PF_MARLIN_ERR_LINE_NUMBER, /* "Line Number is not Last Line Number+1", "No Checksum..." */
    PF_MARLIN_ERR_OTHER,
};

/* One classified reply. text points into the line given to the parser
 * (borrowed: valid as long as that line) and holds the message after the
 * prefix for ECHO, ERROR, FATAL, BUSY and OTHER. */
struct pf_marlin_reply {
    enum pf_marlin_reply_kind kind;
    bool truncated;                       /* the line was longer than PF_MARLIN_REPLY_MAX */
    uint32_t resend_line;                 /* RESEND */
    enum pf_marlin_error_kind error_kind; /* ERROR */
    bool has_last_line;                   /* ERROR ended with "Last Line: N" (Marlin) */
    uint32_t last_line;
    const char *text;
    size_t text_len;
    bool has_temps; /* temps holds at least one valid reading */
    struct pf_marlin_temps temps;
};

struct pf_marlin_progress {
    uint64_t bytes_total; /* as given to pf_marlin_start (0 = unknown) */
    uint64_t bytes_sent;  /* file bytes up to the last file line handed out */
    uint64_t bytes_acked; /* file bytes up to the last line the firmware took */
    uint64_t lines_sent;  /* file commands handed out (each counted once) */
    uint64_t lines_acked; /* file commands the firmware took */
    uint32_t file_line;   /* 1-based line of the file last read */
    unsigned in_flight;   /* numbered lines awaiting their ok */
};

/* Counters since pf_marlin_create; they only grow. Progress never moves
 * backwards either, whatever the printer sends. */
struct pf_marlin_stats {
    uint64_t lines_written;      /* numbered lines handed out, resends included */
    uint64_t lines_resent;       /* of which replays after a Resend or a timeout */
    uint64_t resends;            /* Resend requests honoured */
    uint64_t resends_ignored;    /* repeats for lines already being resent */
    uint64_t checksum_errors;    /* "checksum mismatch" reported by the firmware */
    uint64_t line_number_errors; /* line-number complaints from the firmware */
    uint64_t firmware_errors;    /* other non-fatal "Error:" lines */
    uint64_t oks;
    uint64_t unexpected_oks; /* strays: nothing in flight, or the wrong shape */
    uint64_t busy;
    uint64_t echo_lines;
    uint64_t temp_reports; /* replies that carried temperatures */
    uint64_t garbage_lines;
    uint64_t long_lines; /* of which longer than PF_MARLIN_REPLY_MAX */
    uint64_t other_lines;
    uint64_t empty_lines;
    uint64_t timeouts;           /* silences that led to a probe or the error */
    uint64_t probes;             /* probe commands handed out */
    uint64_t skipped_file_lines; /* blank, comment-only and M110 lines of the file */
};

/* Fills cfg with the defaults. */
void pf_marlin_config_init(struct pf_marlin_config *cfg);

/* Creates an idle engine. cfg is copied (strings too); NULL means defaults.
 * PF_E_INVALID when a setting is out of range or the probe command or the
 * cancel sequence is not valid gcode. *out is owned by the caller: free it
 * with pf_marlin_destroy. */
enum pf_status pf_marlin_create(const struct pf_marlin_config *cfg, struct pf_marlin **out,
                                struct pf_error *err) PF_MUST_CHECK;

/* Frees m (NULL is fine). The source's ctx is not touched. */
void pf_marlin_destroy(struct pf_marlin *m);

/* Starts streaming a file: line numbers are reset with `M110 N0` once nothing
 * is in flight, then file lines go out as the window allows (M110 lines of
 * the file are skipped: the engine owns the numbering). A "start" from the
 * firmware (a reboot) fails the print once a file line has gone out; before
 * that it only restarts the numbering, as boards that reset when their port
 * opens do. src is copied;
 * its ctx is borrowed until the print ends (DONE, CANCELLED, ERROR, reset).
 * total_bytes is the file size for progress (0 if unknown). PF_E_PRECONDITION
 * while a print runs or in the error state. */
enum pf_status pf_marlin_start(struct pf_marlin *m, const struct pf_marlin_source *src,
                               uint64_t total_bytes, struct pf_error *err) PF_MUST_CHECK;

/* Stops handing out file lines (lines in flight still complete; injected
 * commands and resends still go out). PF_E_PRECONDITION unless printing. */
enum pf_status pf_marlin_pause(struct pf_marlin *m, struct pf_error *err) PF_MUST_CHECK;

/* Resumes a paused print. PF_E_PRECONDITION unless paused. */
enum pf_status pf_marlin_resume(struct pf_marlin *m, struct pf_error *err) PF_MUST_CHECK;

/* Drops the rest of the file and any pending injected commands and sends the
 * cancel sequence; the state becomes CANCELLING, then CANCELLED once the
 * sequence is acknowledged. Lines the firmware asks to be resent are still
 * resent first. PF_E_PRECONDITION unless printing or paused. */
enum pf_status pf_marlin_cancel(struct pf_marlin *m, struct pf_error *err) PF_MUST_CHECK;

/* Queues one command (comments stripped) to go out before any further file
 * line. cmd is copied. PF_E_INVALID for an empty or invalid command,
 * PF_E_RESOURCE when PF_MARLIN_INJECT_MAX commands are pending,
 * PF_E_PRECONDITION in the error state. */
enum pf_status pf_marlin_inject(struct pf_marlin *m, const char *cmd,
                                struct pf_error *err) PF_MUST_CHECK;

/* Feeds one line read from the printer, without its '\n' (a trailing '\r' is
 * fine). line is borrowed for the call; it may hold any bytes (len of them).
 * Read into a buffer of PF_MARLIN_REPLY_MAX + 2 bytes: a longer line then
 * arrives cut to PF_MARLIN_REPLY_MAX + 1 and is counted as garbage. When out
 * is not NULL it receives the classification (its text points into line).
 * Bad input is counted, never fatal by itself (but a long run of garbage
 * is); see the stats. */
void pf_marlin_feed_reply(struct pf_marlin *m, const char *line, size_t len, int64_t now_ms,
                          struct pf_marlin_reply *out);

/* Hands out the next bytes to write: one numbered line with its checksum and
 * '\n', or an unnumbered probe after a silence; *len = 0 when there is
 * nothing to write now. Call it until *len is 0 after every feed and
 * whenever pf_marlin_wait_ms has elapsed; the engine assumes every byte
 * handed out is written (if the port fails, call pf_marlin_set_error).
 *
 * Recovery: when nothing understood is heard for reply_timeout_ms while lines
 * are in flight, the probe command goes out unnumbered and no new line is
 * sent until it is answered; after probe_attempts unanswered probes in a row
 * the engine fails with "firmware stopped answering". The firmware answers in
 * order; while a probe is out, an ok that may be its answer (one with
 * temperatures for the default M105 probe, any ok when no line is in flight
 * for another probe) is taken as such, and the lines sent before it, which
 * were lost or lost their ok, go again from the oldest: the firmware's
 * line-number check refuses the ones it already ran and asks for the next,
 * so nothing runs twice. Oks are also matched by shape (only an M105's
 * carries temperatures), and one that fits nothing is counted as a stray.
 * Every print ends with one numbered M105 after the file: the firmware takes
 * it only after every earlier line, so its ok is the proof that the print is
 * DONE (it also brings the final temperatures).
 *
 * out must have room for PF_MARLIN_OUT_MAX bytes (else PF_E_INVALID); the
 * bytes are NUL-terminated for convenience. */
enum pf_status pf_marlin_next_output(struct pf_marlin *m, int64_t now_ms, char *out, size_t cap,
                                     size_t *len) PF_MUST_CHECK;

/* Milliseconds until the engine needs pf_marlin_next_output again for its
 * timeout (0 = now), or -1 when it is not waiting for anything. */
int64_t pf_marlin_wait_ms(const struct pf_marlin *m, int64_t now_ms);

/* Puts the engine in the error state with the caller's reason (a serial port
 * that failed, ...); a first error is kept. Returns code. */
enum pf_status pf_marlin_set_error(struct pf_marlin *m, enum pf_status code, const char *fmt, ...)
    PF_PRINTF(3, 4);

/* Forgets the print, the pending commands and the error, and goes back to
 * IDLE; line numbers are reset before the next command. Stats and
 * temperatures are kept. Use it after reconnecting or resetting the printer. */
void pf_marlin_reset(struct pf_marlin *m);

enum pf_marlin_state pf_marlin_state(const struct pf_marlin *m);
/* A stable lower-case name ("printing", ...) for logs. */
const char *pf_marlin_state_name(enum pf_marlin_state state);
/* The reason of the error state (code PF_OK otherwise); borrowed from m,
 * valid until the next call that changes m. */
const struct pf_error *pf_marlin_error(const struct pf_marlin *m);
void pf_marlin_progress(const struct pf_marlin *m, struct pf_marlin_progress *out);
void pf_marlin_temps(const struct pf_marlin *m, struct pf_marlin_temps *out);
void pf_marlin_stats(const struct pf_marlin *m, struct pf_marlin_stats *out);

/* ---- the pure pieces, exposed for tests and tools ---- */

/* XOR of the len bytes of s: the checksum of `N<n> <cmd>` that goes after '*'. */
uint8_t pf_marlin_checksum(const char *s, size_t len);

/* Cleans one raw gcode line: drops everything from ';' (a comment; '(...)' is
 * not a comment for Marlin and is kept) or '*' (a checksum already there), a
 * leading line number `N<digits>`, and surrounding whitespace; tabs become
 * spaces. *out_len = 0 means there is nothing to send. PF_E_INVALID for a
 * control byte (a binary file?), PF_E_RESOURCE for a command longer than
 * PF_MARLIN_CMD_MAX. out needs PF_MARLIN_CMD_MAX + 1 bytes and is
 * NUL-terminated. */
enum pf_status pf_marlin_clean_line(const char *raw, size_t len, char *out, size_t cap,
                                    size_t *out_len, struct pf_error *err) PF_MUST_CHECK;

/* Writes `N<n> <cmd>*<checksum>\n` and a NUL into out. PF_E_RESOURCE when it
 * does not fit in cap. */
enum pf_status pf_marlin_format_line(uint32_t n, const char *cmd, size_t cmd_len, char *out,
                                     size_t cap, size_t *out_len) PF_MUST_CHECK;

/* Classifies one reply line (len bytes, any content, no '\n'). */
void pf_marlin_parse_reply(const char *line, size_t len, struct pf_marlin_reply *out);

#endif
