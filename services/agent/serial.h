/* Serial ports for the printer drivers of pf-agent: open a tty in raw 8N1 mode
 * at a given baud rate (any rate the kernel driver takes, 250000 included,
 * through Linux termios2), then read lines and write bytes, every call
 * bounded by a timeout and every line by a hard maximum. Errors name the port
 * and say what to check. Linux only. Not thread-safe: one thread uses a
 * struct pf_serial at a time. */
#ifndef PF_SERIAL_H
#define PF_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Bytes of received input buffered while looking for a line end; a longer
 * line is handed out truncated and the rest of it dropped. */
#define PF_SERIAL_RX_MAX 4096

struct pf_serial;

/* True for the baud rates pf_serial_open accepts (9600 .. 1000000, among
 * them 57600, 115200 and 250000). */
bool pf_serial_baud_supported(unsigned baud);

/* Opens path (O_NOCTTY, non-blocking, close-on-exec), takes an exclusive
 * advisory lock so two agents never share a printer, sets raw 8N1 mode
 * without flow control at baud, and discards whatever was already received.
 * path is copied. *out is owned by the caller: pf_serial_close. Errors:
 * PF_E_NOT_FOUND (no such device), PF_E_PERMISSION (not in group dialout?),
 * PF_E_UNAVAILABLE (in use by another process), PF_E_INVALID (not a tty, or
 * a baud rate the port refuses), PF_E_IO otherwise. */
enum pf_status pf_serial_open(const char *path, unsigned baud, struct pf_serial **out,
                              struct pf_error *err) PF_MUST_CHECK;

/* Closes the port and frees s (NULL is fine). */
void pf_serial_close(struct pf_serial *s);

/* Reads one line, waiting at most timeout_ms (0 = only what has arrived;
 * negative = no limit). The line goes to line without its '\n' (a '\r' stays)
 * and NUL-terminated; when it is longer than cap - 1 bytes only cap - 1 are
 * kept and *truncated is set (truncated may be NULL). PF_E_DEADLINE when no
 * whole line came in time (partial input is kept for the next call),
 * PF_E_UNAVAILABLE when the device went away, PF_E_IO on another error. */
enum pf_status pf_serial_read_line(struct pf_serial *s, int64_t timeout_ms, char *line, size_t cap,
                                   size_t *len, bool *truncated,
                                   struct pf_error *err) PF_MUST_CHECK;

/* Writes all len bytes of data (borrowed), waiting at most timeout_ms in total
 * for the port to take them. PF_E_DEADLINE when it did not (some bytes may
 * have gone out), PF_E_UNAVAILABLE when the device went away, PF_E_IO else. */
enum pf_status pf_serial_write_all(struct pf_serial *s, const void *data, size_t len,
                                   int64_t timeout_ms, struct pf_error *err) PF_MUST_CHECK;

/* The file descriptor (for the caller's own poll) and the path; borrowed. */
int pf_serial_fd(const struct pf_serial *s);
const char *pf_serial_path(const struct pf_serial *s);

#endif
