/* Serial port plumbing for printer drivers, done with Linux termios2 ioctls
 * (TCGETS2/TCSETS2 with BOTHER) instead of <termios.h>: glibc's speed_t
 * constants stop at the standard rates and have no B250000, the rate most
 * Marlin boards use, while the kernel takes any rate this way. The two
 * headers cannot be mixed, so raw mode is spelled out here flag by flag. Reads
 * keep a bounded buffer of input so a device that never sends a newline costs
 * PF_SERIAL_RX_MAX bytes, not memory without end. */
#include "serial.h"

#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "timeutil.h"

#define PATH_TEXT_MAX 200

struct pf_serial {
    int fd;
    char path[PATH_TEXT_MAX];
    bool discarding; /* dropping the rest of an over-long line */
    size_t rx_len;
    char rx[PF_SERIAL_RX_MAX];
};

static const unsigned supported_bauds[] = {9600,   19200,  38400,  57600,  115200, 230400,
                                           250000, 460800, 500000, 921600, 1000000};

bool pf_serial_baud_supported(unsigned baud)
{
    for (size_t i = 0; i < sizeof supported_bauds / sizeof supported_bauds[0]; i++) {
        if (supported_bauds[i] == baud)
            return true;
    }
    return false;
}

/* strerror with a lower-case first letter, as our messages are. */
static const char *errno_text(int e, char *buf, size_t size)
{
    snprintf(buf, size, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z')
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

static enum pf_status open_error(const char *path, int e, struct pf_error *err)
{
    char why[128];
    switch (e) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
        return pf_error_set(err, PF_E_NOT_FOUND,
                            "could not open serial port '%s': no such device — is the printer "
                            "plugged in and switched on?",
                            path);
    case EACCES:
    case EPERM:
        return pf_error_set(err, PF_E_PERMISSION,
                            "could not open serial port '%s': permission denied — is the user in "
                            "group dialout?",
                            path);
    case EBUSY:
        return pf_error_set(err, PF_E_UNAVAILABLE,
                            "could not open serial port '%s': device busy — is another program "
                            "using the printer?",
                            path);
    default:
        return pf_error_set(err, PF_E_IO, "could not open serial port '%s': %s", path,
                            errno_text(e, why, sizeof why));
    }
}

/* Raw 8N1, no flow control, no echo, no line editing or translation, and the
 * baud rate as BOTHER. VMIN 1 with O_NONBLOCK: a read with nothing to give
 * fails with EAGAIN (poll does the waiting), so a read of 0 bytes can only
 * mean a hang-up (with VMIN 0 it would also mean "no data yet"). */
static void make_raw(struct termios2 *t, unsigned baud)
{
    t->c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON |
                              IXOFF | IXANY);
    t->c_oflag &= ~(tcflag_t)OPOST;
    t->c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t->c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CSTOPB | CRTSCTS | CBAUD | CIBAUD);
    t->c_cflag |= CS8 | CLOCAL | CREAD | BOTHER; /* CIBAUD 0: input speed = output speed */
    t->c_cc[VMIN] = 1;
    t->c_cc[VTIME] = 0;
    t->c_ispeed = baud;
    t->c_ospeed = baud;
}

static enum pf_status configure(struct pf_serial *s, unsigned baud, struct pf_error *err)
{
    char why[128];
    struct termios2 t;
    if (ioctl(s->fd, TCGETS2, &t) != 0) {
        if (errno == ENOTTY || errno == EINVAL)
            return pf_error_set(err, PF_E_INVALID, "'%s' is not a serial port (not a tty)",
                                s->path);
        return pf_error_set(err, PF_E_IO, "could not read the settings of serial port '%s': %s",
                            s->path, errno_text(errno, why, sizeof why));
    }
    make_raw(&t, baud);
    if (ioctl(s->fd, TCSETS2, &t) != 0)
        return pf_error_set(err, PF_E_INVALID, "could not set serial port '%s' to %u baud: %s",
                            s->path, baud, errno_text(errno, why, sizeof why));
    struct termios2 got;
    if (ioctl(s->fd, TCGETS2, &got) != 0)
        return pf_error_set(err, PF_E_IO, "could not read back the settings of '%s': %s", s->path,
                            errno_text(errno, why, sizeof why));
    /* a driver rounds to what its clock can do; more than 3% off garbles bytes */
    unsigned long diff = got.c_ospeed > baud ? got.c_ospeed - baud : baud - got.c_ospeed;
    if (diff * 100 > (unsigned long)baud * 3)
        return pf_error_set(err, PF_E_INVALID,
                            "serial port '%s' does not support %u baud (the driver chose %u)",
                            s->path, baud, (unsigned)got.c_ospeed);
    if (ioctl(s->fd, TCFLSH, TCIOFLUSH) != 0)
        return pf_error_set(err, PF_E_IO, "could not flush serial port '%s': %s", s->path,
                            errno_text(errno, why, sizeof why));
    return PF_OK;
}

enum pf_status pf_serial_open(const char *path, unsigned baud, struct pf_serial **out,
                              struct pf_error *err)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return pf_error_set(err, PF_E_INVALID, "no serial port given");
    if (!pf_serial_baud_supported(baud))
        return pf_error_set(err, PF_E_INVALID,
                            "unsupported baud rate %u for serial port '%s' (use 57600, 115200, "
                            "250000 or another standard rate)",
                            baud, path);
    struct pf_serial *s = calloc(1, sizeof *s);
    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory opening serial port '%s'", path);
    snprintf(s->path, sizeof s->path, "%s", path);
    enum pf_status st;
    s->fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (s->fd < 0) {
        st = open_error(s->path, errno, err);
        goto out_free_port;
    }
    if (flock(s->fd, LOCK_EX | LOCK_NB) != 0) {
        char why[128];
        if (errno == EWOULDBLOCK)
            st = pf_error_set(err, PF_E_UNAVAILABLE,
                              "serial port '%s' is in use by another process (another agent?)",
                              s->path);
        else
            st = pf_error_set(err, PF_E_IO, "could not lock serial port '%s': %s", s->path,
                              errno_text(errno, why, sizeof why));
        goto out_close_fd;
    }
    st = configure(s, baud, err);
    if (st != PF_OK)
        goto out_close_fd;
    *out = s;
    return PF_OK;

out_close_fd:
    close(s->fd);
out_free_port:
    free(s);
    return st;
}

void pf_serial_close(struct pf_serial *s)
{
    if (s == NULL)
        return;
    close(s->fd);
    free(s);
}

int pf_serial_fd(const struct pf_serial *s)
{
    return s->fd;
}

const char *pf_serial_path(const struct pf_serial *s)
{
    return s->path;
}

static enum pf_status disconnected(const struct pf_serial *s, struct pf_error *err)
{
    return pf_error_set(err, PF_E_UNAVAILABLE,
                        "serial port '%s' was disconnected (cable unplugged or printer off?)",
                        s->path);
}

/* Waits for events on the port until deadline_ms (< 0: none). PF_OK when
 * ready, PF_E_DEADLINE when time ran out. */
static enum pf_status wait_port(struct pf_serial *s, short events, int64_t deadline_ms,
                                struct pf_error *err)
{
    for (;;) {
        int timeout = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - pf_time_mono_ms();
            if (left < 0)
                left = 0;
            timeout = left > 60000 ? 60000 : (int)left;
        }
        struct pollfd p = {.fd = s->fd, .events = events};
        int n = poll(&p, 1, timeout);
        if (n < 0) {
            char why[128];
            if (errno == EINTR)
                continue;
            return pf_error_set(err, PF_E_IO, "could not wait on serial port '%s': %s", s->path,
                                errno_text(errno, why, sizeof why));
        }
        if (n > 0) {
            if (p.revents & events)
                return PF_OK;
            if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
                return disconnected(s, err);
        }
        if (deadline_ms >= 0 && pf_time_mono_ms() >= deadline_ms)
            return PF_E_DEADLINE;
    }
}

/* Hands out rx[0..n) as a line (at most cap - 1 bytes of it) and drops `drop` bytes. */
static void take_line(struct pf_serial *s, size_t n, size_t drop, char *line, size_t cap,
                      size_t *len, bool *truncated)
{
    size_t keep = n < cap - 1 ? n : cap - 1;
    memcpy(line, s->rx, keep);
    line[keep] = '\0';
    *len = keep;
    if (truncated != NULL)
        *truncated = keep < n;
    memmove(s->rx, s->rx + drop, s->rx_len - drop);
    s->rx_len -= drop;
}

enum pf_status pf_serial_read_line(struct pf_serial *s, int64_t timeout_ms, char *line, size_t cap,
                                   size_t *len, bool *truncated, struct pf_error *err)
{
    *len = 0;
    if (truncated != NULL)
        *truncated = false;
    if (line == NULL || cap < 2)
        return pf_error_set(err, PF_E_INVALID, "line buffer too small");
    line[0] = '\0';
    int64_t deadline = timeout_ms < 0 ? -1 : pf_time_mono_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(s->rx, '\n', s->rx_len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - s->rx);
            if (s->discarding) {
                s->discarding = false;
                memmove(s->rx, nl + 1, s->rx_len - n - 1);
                s->rx_len -= n + 1;
                continue;
            }
            take_line(s, n, n + 1, line, cap, len, truncated);
            return PF_OK;
        }
        if (s->rx_len == sizeof s->rx) {
            if (s->discarding) {
                s->rx_len = 0;
                continue;
            }
            /* no line end in PF_SERIAL_RX_MAX bytes: hand out the head, drop the rest */
            take_line(s, s->rx_len, s->rx_len, line, cap, len, NULL);
            if (truncated != NULL)
                *truncated = true;
            s->discarding = true;
            return PF_OK;
        }
        ssize_t got = read(s->fd, s->rx + s->rx_len, sizeof s->rx - s->rx_len);
        if (got > 0) {
            s->rx_len += (size_t)got;
            continue;
        }
        if (got == 0)
            return disconnected(s, err);
        if (errno == EINTR)
            continue;
        if (errno == EIO || errno == ENXIO || errno == ENODEV)
            return disconnected(s, err);
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            char why[128];
            return pf_error_set(err, PF_E_IO, "could not read from serial port '%s': %s", s->path,
                                errno_text(errno, why, sizeof why));
        }
        if (deadline >= 0 && pf_time_mono_ms() >= deadline)
            return pf_error_set(err, PF_E_DEADLINE, "no line from serial port '%s' in %lld ms",
                                s->path, (long long)timeout_ms);
        enum pf_status st = wait_port(s, POLLIN, deadline, err);
        if (st == PF_E_DEADLINE)
            return pf_error_set(err, PF_E_DEADLINE, "no line from serial port '%s' in %lld ms",
                                s->path, (long long)timeout_ms);
        if (st != PF_OK)
            return st;
    }
}

enum pf_status pf_serial_write_all(struct pf_serial *s, const void *data, size_t len,
                                   int64_t timeout_ms, struct pf_error *err)
{
    const char *p = data;
    size_t done = 0;
    int64_t deadline = timeout_ms < 0 ? -1 : pf_time_mono_ms() + timeout_ms;
    while (done < len) {
        ssize_t n = write(s->fd, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EIO || errno == ENXIO || errno == ENODEV || errno == EPIPE))
            return disconnected(s, err);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            char why[128];
            return pf_error_set(err, PF_E_IO, "could not write to serial port '%s': %s", s->path,
                                errno_text(errno, why, sizeof why));
        }
        enum pf_status st = wait_port(s, POLLOUT, deadline, err);
        if (st == PF_E_DEADLINE)
            return pf_error_set(err, PF_E_DEADLINE,
                                "writing to serial port '%s' timed out after %lld ms with %zu of "
                                "%zu bytes written (flow control stuck?)",
                                s->path, (long long)timeout_ms, done, len);
        if (st != PF_OK)
            return st;
    }
    return PF_OK;
}
