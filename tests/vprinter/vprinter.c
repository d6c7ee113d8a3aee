/* vprinter: a virtual Marlin printer on a pseudo-terminal, for tests of the
 * marlin driver. It opens a pty pair, prints the slave's path as the first
 * line of stdout, and then answers like Marlin's queue.cpp: line numbers and
 * checksums are checked (Error + Resend + ok), M110 sets the line number,
 * M105 reports temperatures, M155 turns on auto-reports, M104/M140 set
 * targets, M109/M190 heat with busy and temperature lines before their ok,
 * anything else just gets its ok. Like an Arduino board that resets when its
 * port is opened, it "boots" when the first bytes arrive: those are lost and
 * the "start" banner is sent. Flags inject faults: checksum errors,
 * resend requests, busy lines, noise lines, lost lines and lost oks, a
 * firmware that dies, one that answers only garbage, a thermal runaway and a
 * reset. Every numbered command it takes is logged on stderr; at exit (EOF on
 * the pty, SIGTERM or SIGINT) it prints one summary line on stdout:
 *   summary accepted=N fnv=HEX16 m105=N unnumbered=N rejected=N last=TEXT
 * where fnv is the 64-bit FNV-1a of every numbered command taken (M110 and
 * M105 excepted), each followed by '\n', in order: a test compares it with
 * the file it streamed to prove every line arrived exactly once, in order. */
#define _GNU_SOURCE /* posix_openpt, ptsname */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define RX_MAX      65536 /* input kept while looking for a line end */
#define RX_LINE_MAX 1024  /* longer input lines are cut (Marlin: MAX_CMD_SIZE) */
#define LAST_MAX    128

struct faults {
    unsigned long checksum_errors_every;
    unsigned long resend_every;
    unsigned long busy_every;
    unsigned long noise_every;
    unsigned long die_after;
    unsigned long thermal_after;
    unsigned long reset_after;
    unsigned long lose_every;
    unsigned long lose_ok_every;
    bool garbage_only;
    long report_interval_ms; /* overrides M155's seconds when > 0 */
};

struct printer {
    int master;
    struct faults f;
    uint64_t rng;
    long last_n;
    bool dead;   /* --die-after-lines reached: reads and ignores */
    bool halted; /* kill(): ignores everything */
    double hotend, hotend_target, bed, bed_target;
    long report_ms; /* auto-report interval, 0 = off */
    int64_t next_report_ms;
    /* counters */
    unsigned long numbered_seen, numbered_done, executed, replies;
    unsigned long accepted, m105, unnumbered, rejected;
    uint64_t fnv;
    char last[LAST_MAX];
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_requested) {
    }
}

static uint64_t rnd(struct printer *p)
{
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return p->rng;
}

static bool every(unsigned long n, unsigned long count)
{
    return n > 0 && count > 0 && count % n == 0;
}

/* Writes all of data to the pty; gives up quietly when the host is gone. */
static void put(struct printer *p, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(p->master, data, len);
        if (n < 0 && errno == EINTR && !stop_requested)
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static void put_garbage(struct printer *p)
{
    char junk[64];
    size_t n = 1 + rnd(p) % (sizeof junk - 1);
    for (size_t i = 0; i < n; i++) {
        char c = (char)(rnd(p) & 0xff);
        junk[i] = (c == '\n' || c == '\r') ? '\x01' : c;
    }
    junk[0] = '\x02'; /* at least one control byte: unreadable for sure */
    put(p, junk, n);
    put(p, "\n", 1);
}

/* One reply line ('\n' added), with noise before it now and then. */
static void reply(struct printer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct printer *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (every(p->f.noise_every, ++p->replies))
        put_garbage(p);
    put(p, line, (size_t)n);
}

static void report_temps(struct printer *p, const char *prefix, const char *suffix)
{
    reply(p, "%sT:%.2f /%.2f B:%.2f /%.2f @:%d B@:%d%s", prefix, p->hotend, p->hotend_target,
          p->bed, p->bed_target, p->hotend_target > 0 ? 127 : 0, p->bed_target > 0 ? 127 : 0,
          suffix);
}

static void resend(struct printer *p, const char *why)
{
    p->rejected++;
    reply(p, "Error:%s, Last Line: %ld", why, p->last_n);
    reply(p, "Resend: %ld", p->last_n + 1);
    reply(p, "ok");
}

/* The value after letter in cmd ("S210" -> 210), or -1. */
static double param(const char *cmd, char letter)
{
    for (const char *s = strchr(cmd, ' '); s != NULL; s = strchr(s + 1, ' ')) {
        if (s[1] == letter)
            return strtod(s + 2, NULL);
    }
    return -1;
}

static bool is_cmd(const char *cmd, const char *name)
{
    size_t n = strlen(name);
    return strncmp(cmd, name, n) == 0 && (cmd[n] == '\0' || cmd[n] == ' ');
}

static void heat(struct printer *p, double *actual, double target)
{
    double start = *actual;
    for (int i = 1; i <= 3; i++) {
        sleep_ms(10);
        *actual = start + (target - start) * i / 4.0;
        report_temps(p, " ", " W:?");
        reply(p, "echo:busy: processing");
    }
    *actual = target;
}

static void fnv_add(struct printer *p, const char *cmd)
{
    for (const char *c = cmd; *c; c++) {
        p->fnv ^= (uint8_t)*c;
        p->fnv *= 0x100000001b3ull;
    }
    p->fnv ^= (uint8_t)'\n';
    p->fnv *= 0x100000001b3ull;
}

/* Runs one command that passed the checks; numbered tells whether it came
 * with a line number. */
static void execute(struct printer *p, const char *cmd, bool numbered)
{
    bool m105 = is_cmd(cmd, "M105");
    bool m110 = is_cmd(cmd, "M110");
    p->executed++;
    if (numbered)
        p->numbered_done++;
    if (!numbered) {
        p->unnumbered++;
    } else if (m105) {
        p->m105++;
    } else if (!m110) {
        p->accepted++;
        fnv_add(p, cmd);
        snprintf(p->last, sizeof p->last, "%s", cmd);
        fprintf(stderr, "vprinter: accepted N%ld %s\n", p->last_n, cmd);
        if (p->f.thermal_after > 0 && p->accepted == p->f.thermal_after) {
            reply(p, "Error:Thermal Runaway, system stopped! Heater_ID: 0");
            reply(p, "Error:Printer halted. kill() called!");
            p->halted = true;
            return;
        }
        if (p->f.reset_after > 0 && p->accepted == p->f.reset_after) {
            /* a watchdog reset: the queue and the line number are gone */
            reply(p, "start");
            reply(p, "echo:Marlin 2.1.2 (vprinter)");
            p->last_n = 0;
            return;
        }
    }
    if (every(p->f.busy_every, p->executed)) {
        for (int i = 0; i < 2; i++) {
            sleep_ms(10);
            reply(p, "echo:busy: processing");
        }
    }
    if (m105) {
        report_temps(p, "ok ", "");
        return;
    }
    if (m110) {
        double n = param(cmd, 'N');
        p->last_n = n >= 0 ? (long)n : 0;
    } else if (is_cmd(cmd, "M104")) {
        p->hotend_target = param(cmd, 'S') >= 0 ? param(cmd, 'S') : 0;
    } else if (is_cmd(cmd, "M140")) {
        p->bed_target = param(cmd, 'S') >= 0 ? param(cmd, 'S') : 0;
    } else if (is_cmd(cmd, "M109")) {
        p->hotend_target = param(cmd, 'S') >= 0 ? param(cmd, 'S') : p->hotend_target;
        heat(p, &p->hotend, p->hotend_target);
    } else if (is_cmd(cmd, "M190")) {
        p->bed_target = param(cmd, 'S') >= 0 ? param(cmd, 'S') : p->bed_target;
        heat(p, &p->bed, p->bed_target);
    } else if (is_cmd(cmd, "M155")) {
        double s = param(cmd, 'S');
        p->report_ms = s <= 0                        ? 0
                       : p->f.report_interval_ms > 0 ? p->f.report_interval_ms
                                                     : (long)(s * 1000);
        p->next_report_ms = now_ms() + p->report_ms;
    } else if (cmd[0] != 'G' && cmd[0] != 'M' && cmd[0] != 'T') {
        reply(p, "echo:Unknown command: \"%s\"", cmd);
    }
    if (numbered && every(p->f.lose_ok_every, p->numbered_done))
        return; /* the ok is lost on the way */
    if (p->f.die_after > 0 && p->accepted >= p->f.die_after) {
        reply(p, "ok");
        p->dead = true;
        return;
    }
    reply(p, "ok");
}

/* Marlin's queue.cpp for one received line. */
static void handle_line(struct printer *p, char *line)
{
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\r')
        line[--len] = '\0';
    if (len == 0 || p->halted || p->dead)
        return;
    if (p->f.garbage_only) {
        unsigned n = 1 + (unsigned)(rnd(p) % 3);
        for (unsigned i = 0; i < n; i++)
            put_garbage(p);
        return;
    }
    char *star = strrchr(line, '*');
    if (line[0] != 'N') {
        if (star != NULL) {
            resend(p, "No Line Number with checksum");
            return;
        }
        execute(p, line, false);
        return;
    }
    p->numbered_seen++;
    if (every(p->f.lose_every, p->numbered_seen))
        return; /* lost on the way: no answer at all */
    char *end;
    long n = strtol(line + 1, &end, 10);
    char *cmd = *end == ' ' ? end + 1 : end;
    bool m110 = is_cmd(cmd, "M110");
    if (n != p->last_n + 1 && !m110) {
        resend(p, "Line Number is not Last Line Number+1");
        return;
    }
    if (star == NULL) {
        resend(p, "No Checksum with line number");
        return;
    }
    uint8_t cs = 0;
    for (const char *c = line; c < star; c++)
        cs ^= (uint8_t)*c;
    if (strtol(star + 1, NULL, 10) != cs || every(p->f.checksum_errors_every, p->numbered_seen)) {
        resend(p, "checksum mismatch");
        return;
    }
    if (every(p->f.resend_every, p->numbered_seen)) {
        /* a firmware that only asks, in either spelling */
        p->rejected++;
        if (p->numbered_seen / p->f.resend_every % 2)
            reply(p, "Resend: %ld", p->last_n + 1);
        else
            reply(p, "rs %ld", p->last_n + 1);
        reply(p, "ok");
        return;
    }
    p->last_n = n;
    *star = '\0';
    execute(p, cmd, true);
}

static int open_pty(struct printer *p, int *slave)
{
    p->master = posix_openpt(O_RDWR | O_NOCTTY);
    if (p->master < 0 || grantpt(p->master) != 0 || unlockpt(p->master) != 0) {
        perror("vprinter: pty");
        return -1;
    }
    const char *name = ptsname(p->master);
    if (name == NULL) {
        perror("vprinter: ptsname");
        return -1;
    }
    /* Hold the slave open in raw mode until the host has connected: no echo
     * of our own output, and no EIO on the master before the host opens it. */
    *slave = open(name, O_RDWR | O_NOCTTY);
    struct termios t;
    if (*slave < 0 || tcgetattr(*slave, &t) != 0) {
        perror("vprinter: slave");
        return -1;
    }
    cfmakeraw(&t);
    if (tcsetattr(*slave, TCSANOW, &t) != 0) {
        perror("vprinter: tcsetattr");
        return -1;
    }
    printf("%s\n", name);
    fflush(stdout);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: vprinter [--seed N] [--checksum-errors-every N] [--resend-every N]\n"
                 "                [--busy-every N] [--noise-every N] [--die-after-lines N]\n"
                 "                [--garbage-only] [--thermal-runaway-after N]\n"
                 "                [--reset-after N] [--lose-every N] [--lose-ok-every N]\n"
                 "                [--report-interval-ms N]\n");
}

static int parse_args(int argc, char **argv, struct printer *p)
{
    enum {
        O_SEED = 1000,
        O_CS,
        O_RESEND,
        O_BUSY,
        O_NOISE,
        O_DIE,
        O_GARBAGE,
        O_THERMAL,
        O_RESET,
        O_LOSE,
        O_LOSE_OK,
        O_REPORT,
        O_HELP
    };
    static const struct option opts[] = {
        {"seed", required_argument, NULL, O_SEED},
        {"checksum-errors-every", required_argument, NULL, O_CS},
        {"resend-every", required_argument, NULL, O_RESEND},
        {"busy-every", required_argument, NULL, O_BUSY},
        {"noise-every", required_argument, NULL, O_NOISE},
        {"die-after-lines", required_argument, NULL, O_DIE},
        {"garbage-only", no_argument, NULL, O_GARBAGE},
        {"thermal-runaway-after", required_argument, NULL, O_THERMAL},
        {"reset-after", required_argument, NULL, O_RESET},
        {"lose-every", required_argument, NULL, O_LOSE},
        {"lose-ok-every", required_argument, NULL, O_LOSE_OK},
        {"report-interval-ms", required_argument, NULL, O_REPORT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        unsigned long v = 0;
        if (optarg != NULL) {
            char *end;
            errno = 0;
            v = strtoul(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || end == optarg) {
                fprintf(stderr, "vprinter: bad number '%s'\n", optarg);
                return -1;
            }
        }
        switch (c) {
        case O_SEED:
            p->rng = v | 1;
            break;
        case O_CS:
            p->f.checksum_errors_every = v;
            break;
        case O_RESEND:
            p->f.resend_every = v;
            break;
        case O_BUSY:
            p->f.busy_every = v;
            break;
        case O_NOISE:
            p->f.noise_every = v;
            break;
        case O_DIE:
            p->f.die_after = v;
            break;
        case O_GARBAGE:
            p->f.garbage_only = true;
            break;
        case O_THERMAL:
            p->f.thermal_after = v;
            break;
        case O_RESET:
            p->f.reset_after = v;
            break;
        case O_LOSE:
            p->f.lose_every = v;
            break;
        case O_LOSE_OK:
            p->f.lose_ok_every = v;
            break;
        case O_REPORT:
            p->f.report_interval_ms = (long)v;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct printer p;
    static char rx[RX_MAX];
    p.rng = 0x9e3779b97f4a7c15ull;
    p.fnv = 0xcbf29ce484222325ull;
    p.hotend = 21.5;
    p.bed = 20.8;
    if (parse_args(argc, argv, &p) != 0)
        return 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read or write returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int slave = -1;
    if (open_pty(&p, &slave) != 0)
        return 1;
    size_t rx_len = 0;
    bool dropping = false; /* in the middle of an over-long line */
    while (!stop_requested) {
        int timeout = 1000;
        if (p.report_ms > 0) {
            int64_t left = p.next_report_ms - now_ms();
            timeout = left < 0 ? 0 : left < 1000 ? (int)left : 1000;
        }
        struct pollfd pfd = {.fd = p.master, .events = POLLIN};
        int n = poll(&pfd, 1, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (p.report_ms > 0 && now_ms() >= p.next_report_ms && !p.halted && !p.dead &&
            !p.f.garbage_only) {
            report_temps(&p, " ", "");
            p.next_report_ms = now_ms() + p.report_ms;
        }
        if (n <= 0)
            continue;
        ssize_t got = read(p.master, rx + rx_len, sizeof rx - rx_len - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* EIO: the host closed its end */
        if (slave >= 0) {
            /* the host is here: its close will end us. Reset like a board
             * whose port was just opened: what came in is lost, and the
             * banner goes out. */
            close(slave);
            slave = -1;
            sleep_ms(20);
            tcflush(p.master, TCIFLUSH);
            if (!p.f.garbage_only) {
                reply(&p, "start");
                reply(&p, "echo:Marlin 2.1.2 (vprinter)");
            }
            continue;
        }
        rx_len += (size_t)got;
        char *start = rx;
        char *nl;
        while ((nl = memchr(start, '\n', rx_len - (size_t)(start - rx))) != NULL) {
            *nl = '\0';
            if (!dropping) {
                if (nl - start >= RX_LINE_MAX)
                    start[RX_LINE_MAX - 1] = '\0';
                handle_line(&p, start);
            }
            dropping = false;
            start = nl + 1;
        }
        rx_len -= (size_t)(start - rx);
        memmove(rx, start, rx_len);
        if (rx_len == sizeof rx - 1) {
            rx_len = 0; /* no line end in RX_MAX bytes: drop it */
            dropping = true;
        }
    }
    printf("summary accepted=%lu fnv=%016" PRIx64 " m105=%lu unnumbered=%lu rejected=%lu last=%s\n",
           p.accepted, p.fnv, p.m105, p.unnumbered, p.rejected, p.last);
    fflush(stdout);
    fprintf(stderr, "vprinter: exit accepted=%lu executed=%lu\n", p.accepted, p.executed);
    if (slave >= 0)
        close(slave);
    close(p.master);
    return 0;
}
