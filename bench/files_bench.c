/* files_bench: upload and download throughput of the real pf-files over
 * loopback, measured against `openssl dgst -sha256` of the same file in the
 * same run on the same machine, and the ratios of the two. It starts pf-files
 * as a child on 127.0.0.1:0 with a temp data dir and runs rounds; each round
 * writes the round number into the first bytes of the test file (so every
 * upload is of new content and stores a new blob: the "already stored" path is
 * never what is timed), times openssl on it, uploads it with
 * pf_files_upload_path, and downloads the new blob twice into a sink (default
 * /dev/null) with pf_files_download_fd: first while the server must still
 * verify the blob (the first download after an upload), then again with its
 * verification cache warm. The best round of each is reported. A benchmark,
 * not a test: it prints numbers and fails only when something breaks. */
#define _GNU_SOURCE /* readlink, statfs, nftw flags */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "files_client.h"
#include "log.h"

extern char **environ;

#define PROGRAM           "files_bench"
#define MIB               (1024.0 * 1024.0)
#define FILL_BYTES        (1 << 20)           /* test file written in pieces of this size */
#define SERVER_WAIT_MS    15000               /* for pf-files to log its port */
#define SERVER_STOP_MS    15000               /* for pf-files to exit after SIGTERM */
#define CALL_TIMEOUT_MS   (30 * 60 * 1000)    /* per upload or download */
#define OPENSSL_OUT_MAX   (PATH_MAX + 256)    /* "SHA2-256(PATH)= HEX\n" */
#define LOG_TAIL_BYTES    2048                /* of the server log, shown on failure */
#define SERVER_BLOB_SLACK ((uint64_t)1 << 20) /* --max-blob-size above the test size */
#define TARGET_RATIO      0.5

enum phase { PH_OPENSSL, PH_UPLOAD, PH_DOWNLOAD_FIRST, PH_DOWNLOAD_WARM, PH_COUNT };

static const char *const phase_names[PH_COUNT] = {
    "openssl dgst -sha256",
    "upload",
    "download, first after upload",
    "download, verify cache warm",
};

/* One timed phase: wall time on CLOCK_MONOTONIC and the CPU time (user +
 * system) the client side (this process, or openssl for its phase) and
 * pf-files spent in it. With 2 cores, client + server CPU near 2x the wall
 * time means the phase is CPU-bound. */
struct measure {
    double start; /* CLOCK_MONOTONIC seconds, to line up with `perf record -k mono` */
    double seconds;
    double client_cpu;
    double server_cpu;
};

struct bench_flags {
    uint64_t size;
    int64_t rounds;
    char *pf_files;
    char *tmp_dir;
    char *sink;
    bool keep;
    bool verbose;
};

/* One run: the temp directory and everything in it, the server child and the
 * channel to it. Lives on main's stack; bench_release frees it all. */
struct bench {
    const struct bench_flags *flags;
    char pf_files[PATH_MAX];
    char *dir; /* mkdtemp result, owned; NULL until created */
    char blob_path[PATH_MAX];
    char data_dir[PATH_MAX];
    char log_path[PATH_MAX];
    pid_t server;
    int port;
    struct pf_rpc_channel *ch;
    long clock_ticks;              /* sysconf(_SC_CLK_TCK), for /proc/PID/stat */
    struct measure best[PH_COUNT]; /* the fastest round of each; seconds 0 = none yet */
};

/* The only mutable globals, as a signal handler needs: on SIGINT or SIGTERM
 * the bench stops pf-files, whose going away ends the call in progress with
 * an error, and the normal clean-up runs. */
static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t signal_target; /* pf-files' pid, 0 when not running */

static void on_signal(int sig)
{
    int saved = errno;
    interrupted = sig;
    if (signal_target > 0)
        kill((pid_t)signal_target, SIGTERM);
    errno = saved;
}

/* SIGINT and SIGTERM interrupt (see on_signal); SIGPIPE is ignored, so a
 * closed stdout (`| head`) does not kill the bench before it cleans up. */
static enum pf_status install_signals(struct pf_error *err)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct sigaction ign = {.sa_handler = SIG_IGN};

    sigemptyset(&sa.sa_mask);
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
        sigaction(SIGPIPE, &ign, NULL) != 0)
        return pf_error_set(err, PF_E_INTERNAL, "could not install signal handlers: %s",
                            strerror(errno));
    return PF_OK;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double rate_mib(uint64_t bytes, double seconds)
{
    return seconds > 0 ? (double)bytes / MIB / seconds : 0;
}

static double timeval_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static double self_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return timeval_seconds(&ru.ru_utime) + timeval_seconds(&ru.ru_stime);
}

/* utime + stime of pid from /proc/PID/stat; 0 when it cannot be read. */
static double process_cpu_seconds(pid_t pid, long clock_ticks)
{
    char path[64], text[1024];
    unsigned long long utime, stime;
    const char *p;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    /* The command name, field 2, is in parentheses and may hold spaces:
     * fields 14 and 15 are counted from the last ')'. */
    p = strrchr(text, ')');
    if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                            &stime) != 2)
        return 0;
    return clock_ticks > 0 ? (double)(utime + stime) / (double)clock_ticks : 0;
}

static void measure_begin(const struct bench *b, struct measure *m)
{
    m->server_cpu = process_cpu_seconds(b->server, b->clock_ticks);
    m->client_cpu = self_cpu_seconds();
    m->start = seconds_now();
}

static void measure_end(const struct bench *b, struct measure *m)
{
    m->seconds = seconds_now() - m->start;
    m->client_cpu = self_cpu_seconds() - m->client_cpu;
    m->server_cpu = process_cpu_seconds(b->server, b->clock_ticks) - m->server_cpu;
}

/* ---- the machine ---- */

/* Copies the value of the first "model name" line of /proc/cpuinfo into out. */
static void cpu_model(char *out, size_t out_size)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");

    snprintf(out, out_size, "unknown (could not read /proc/cpuinfo)");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || colon == NULL)
            continue;
        colon++;
        colon += strspn(colon, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, out_size, "%s", colon);
        break;
    }
    fclose(f);
}

static void load_average(char *out, size_t out_size)
{
    double l[3];
    if (getloadavg(l, 3) != 3)
        snprintf(out, out_size, "unknown");
    else
        snprintf(out, out_size, "%.2f %.2f %.2f", l[0], l[1], l[2]);
}

static const char *fs_name(const char *path)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0)
        return "unknown";
    switch (sf.f_type) {
    case 0x01021994:
        return "tmpfs";
    case 0xEF53:
        return "ext2/3/4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794c7630:
        return "overlayfs";
    default:
        return "other";
    }
}

static void print_machine(const struct bench *b)
{
    char model[256], load[64];
    struct utsname u;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

    cpu_model(model, sizeof model);
    load_average(load, sizeof load);
    printf("machine:  %ld x %s, %.1f GiB RAM\n", sysconf(_SC_NPROCESSORS_ONLN), model,
           pages > 0 && page > 0 ? (double)pages * (double)page / (MIB * 1024) : 0.0);
    if (uname(&u) == 0)
        printf("kernel:   %s %s %s\n", u.sysname, u.release, u.machine);
    printf("load:     %s (1, 5, 15 min) before the run\n", load);
    printf("temp dir: %s (%s)\n", b->dir, fs_name(b->dir));
    printf("pf-files: %s\n", b->pf_files);
    printf("sink:     %s\n", b->flags->sink);
    fflush(stdout);
}

/* ---- the test file ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static enum pf_status write_all(int fd, const uint8_t *p, size_t len, const char *path,
                                struct pf_error *err)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pf_error_set(err, PF_E_IO, "could not write '%s': %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return PF_OK;
}

/* Creates path with size pseudo-random bytes (incompressible, reproducible). */
static enum pf_status make_test_file(const char *path, uint64_t size, struct pf_error *err)
{
    uint64_t state = 0x5052494E54464152ULL; /* "PRINTFAR" */
    enum pf_status rc = PF_OK;
    uint64_t *words;
    int fd;

    words = malloc(FILL_BYTES);
    if (words == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for a %d-byte buffer", FILL_BYTES);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = pf_error_set(err, PF_E_IO, "could not create '%s': %s", path, strerror(errno));
        goto out_free_words;
    }
    for (uint64_t left = size; left > 0 && rc == PF_OK && !interrupted;) {
        size_t n = left < FILL_BYTES ? (size_t)left : FILL_BYTES;
        for (size_t i = 0; i < FILL_BYTES / sizeof(*words); i++)
            words[i] = splitmix64(&state);
        rc = write_all(fd, (const uint8_t *)words, n, path, err);
        left -= n;
    }
    if (interrupted && rc == PF_OK)
        rc = pf_error_set(err, PF_E_CANCELLED, "interrupted while writing '%s'", path);
    if (close(fd) != 0 && rc == PF_OK)
        rc = pf_error_set(err, PF_E_IO, "could not close '%s': %s", path, strerror(errno));
out_free_words:
    free(words);
    return rc;
}

/* Writes the round number over the first bytes, so each round's content (and
 * blob) is new. */
static enum pf_status tag_test_file(const char *path, uint64_t size, int64_t round,
                                    struct pf_error *err)
{
    char tag[32];
    size_t len = (size_t)snprintf(tag, sizeof tag, "pf-bench-round-%08" PRId64, round);
    enum pf_status rc = PF_OK;
    int fd;

    if (len > size)
        len = (size_t)size;
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "could not open '%s': %s", path, strerror(errno));
    if (pwrite(fd, tag, len, 0) != (ssize_t)len)
        rc = pf_error_set(err, PF_E_IO, "could not write the round tag into '%s': %s", path,
                          strerror(errno));
    if (close(fd) != 0 && rc == PF_OK)
        rc = pf_error_set(err, PF_E_IO, "could not close '%s': %s", path, strerror(errno));
    return rc;
}

/* ---- child processes ---- */

/* Describes a wait status: "exit code 3", "signal 9". */
static void describe_status(int status, char *out, size_t out_size)
{
    if (WIFEXITED(status))
        snprintf(out, out_size, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, out_size, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, out_size, "wait status %#x", status);
}

static pid_t wait_child(pid_t pid, int *status)
{
    pid_t r;
    while ((r = waitpid(pid, status, 0)) < 0 && errno == EINTR)
        ;
    return r;
}

/* Prints the last LOG_TAIL_BYTES of the server log to stderr. */
static void print_log_tail(const char *path)
{
    char buf[LOG_TAIL_BYTES + 1];
    ssize_t n;
    off_t end;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return;
    end = lseek(fd, 0, SEEK_END);
    if (end >= 0 && lseek(fd, end > LOG_TAIL_BYTES ? end - LOG_TAIL_BYTES : 0, SEEK_SET) >= 0 &&
        (n = read(fd, buf, LOG_TAIL_BYTES)) > 0) {
        buf[n] = '\0';
        fprintf(stderr, "%s: last lines of the pf-files log '%s':\n%s", PROGRAM, path, buf);
    }
    close(fd);
}

/* Finds `event=listening ... port=N` in the log text; 0 when absent. */
static int port_from_log(const char *text)
{
    const char *line = strstr(text, "event=listening ");
    const char *port, *eol;
    long v;

    if (line == NULL)
        return 0;
    eol = strchr(line, '\n');
    port = strstr(line, " port=");
    if (port == NULL || (eol != NULL && port > eol))
        return 0;
    v = strtol(port + 6, NULL, 10);
    return v > 0 && v < 65536 ? (int)v : 0;
}

/* Reads the whole (small) log file into buf, NUL-terminated. */
static void read_log(const char *path, char *buf, size_t size)
{
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    buf[0] = '\0';
    if (fd < 0)
        return;
    n = read(fd, buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

/* Starts pf-files with stdout and stderr into log_path and waits for the
 * port it logs. fork + exec rather than posix_spawn so that the child asks
 * for SIGTERM when this process dies (PR_SET_PDEATHSIG): a benchmark killed
 * half-way leaves no server behind. Called before gRPC starts any thread. */
static enum pf_status start_server(struct bench *b, struct pf_error *err)
{
    char max_blob[32], text[16384], why[64];
    pid_t parent = getpid();
    double deadline;
    int log_fd, status;

    snprintf(max_blob, sizeof max_blob, "%" PRIu64, b->flags->size + SERVER_BLOB_SLACK);
    char *argv[] = {b->pf_files,   "--listen",    "127.0.0.1:0", "--admin-listen",
                    "127.0.0.1:0", "--data-dir",  b->data_dir,   "--max-blob-size",
                    max_blob,      "--log-level", "info",        NULL};
    log_fd = open(b->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return pf_error_set(err, PF_E_IO, "could not create '%s': %s", b->log_path,
                            strerror(errno));
    fflush(NULL);
    b->server = fork();
    if (b->server == 0) {
        int null_fd = open("/dev/null", O_RDONLY);
        signal(SIGPIPE, SIG_DFL); /* ignored here, but the child starts with defaults */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent || null_fd < 0 ||
            dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
            _exit(127);
        execv(b->pf_files, argv);
        dprintf(2, "%s: could not run '%s': %s\n", PROGRAM, b->pf_files, strerror(errno));
        _exit(127);
    }
    close(log_fd);
    if (b->server < 0) {
        b->server = 0;
        return pf_error_set(err, PF_E_IO, "could not fork to start pf-files: %s", strerror(errno));
    }
    signal_target = b->server;
    deadline = seconds_now() + SERVER_WAIT_MS / 1000.0;
    for (;;) {
        read_log(b->log_path, text, sizeof text);
        b->port = port_from_log(text);
        if (b->port > 0)
            return PF_OK;
        pid_t r = waitpid(b->server, &status, WNOHANG);
        if (r == b->server) {
            b->server = 0;
            signal_target = 0;
            describe_status(status, why, sizeof why);
            print_log_tail(b->log_path);
            return pf_error_set(err, PF_E_UNAVAILABLE,
                                "pf-files ended (%s) before logging its port", why);
        }
        if (interrupted || seconds_now() > deadline) {
            print_log_tail(b->log_path);
            return pf_error_set(err, PF_E_DEADLINE,
                                "pf-files logged no 'event=listening ... port=N' within %d ms",
                                SERVER_WAIT_MS);
        }
        sleep_ms(20);
    }
}

/* Sends SIGTERM and waits for the exit (SIGKILL after SERVER_STOP_MS). */
static void stop_server(struct bench *b)
{
    char why[64];
    double deadline;
    int status;

    if (b->server <= 0)
        return;
    if (kill(b->server, SIGTERM) != 0)
        fprintf(stderr, "%s: could not send SIGTERM to pf-files (pid %d): %s\n", PROGRAM,
                (int)b->server, strerror(errno));
    deadline = seconds_now() + SERVER_STOP_MS / 1000.0;
    for (;;) {
        pid_t r = waitpid(b->server, &status, WNOHANG);
        if (r == b->server)
            break;
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "%s: could not wait for pf-files (pid %d): %s\n", PROGRAM,
                    (int)b->server, strerror(errno));
            b->server = 0;
            return;
        }
        if (seconds_now() > deadline) {
            fprintf(stderr, "%s: pf-files (pid %d) still running %d ms after SIGTERM: killing it\n",
                    PROGRAM, (int)b->server, SERVER_STOP_MS);
            kill(b->server, SIGKILL);
            wait_child(b->server, &status);
            break;
        }
        sleep_ms(20);
    }
    b->server = 0;
    signal_target = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        describe_status(status, why, sizeof why);
        fprintf(stderr, "%s: pf-files stopped with %s\n", PROGRAM, why);
        print_log_tail(b->log_path);
    }
}

/* Runs `openssl dgst -sha256 path`, timing it from spawn to exit (m's client
 * CPU is openssl's own), and copies the hex digest it prints into hex. */
static enum pf_status run_openssl(const struct bench *b, const char *path,
                                  char hex[PF_DIGEST_HEX_LEN + 1], struct measure *m,
                                  struct pf_error *err)
{
    struct rusage ru;
    char *argv[] = {"openssl", "dgst", "-sha256", (char *)path, NULL};
    char out[OPENSSL_OUT_MAX + 1], why[64];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t dfl;
    size_t used = 0;
    int fds[2], e, status;
    const char *eq;
    pid_t pid, r;

    if (pipe2(fds, O_CLOEXEC) != 0)
        return pf_error_set(err, PF_E_IO, "could not create a pipe: %s", strerror(errno));
    if (posix_spawn_file_actions_init(&fa) != 0) {
        close(fds[0]);
        close(fds[1]);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory for spawn actions");
    }
    e = posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    /* SIGPIPE is ignored here; openssl starts with the default. */
    if (e == 0)
        e = posix_spawnattr_init(&attr);
    if (e == 0) {
        sigemptyset(&dfl);
        sigaddset(&dfl, SIGPIPE);
        e = posix_spawnattr_setsigdefault(&attr, &dfl);
        if (e == 0)
            e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
        measure_begin(b, m);
        if (e == 0)
            e = posix_spawnp(&pid, "openssl", &fa, &attr, argv, environ);
        posix_spawnattr_destroy(&attr);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (e != 0) {
        close(fds[0]);
        return pf_error_set(err, PF_E_IO, "could not run 'openssl': %s", strerror(e));
    }
    for (;;) {
        ssize_t n = read(fds[0], out + used, OPENSSL_OUT_MAX - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
        if (used == OPENSSL_OUT_MAX)
            break;
    }
    close(fds[0]);
    while ((r = wait4(pid, &status, 0, &ru)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return pf_error_set(err, PF_E_IO, "could not wait for 'openssl': %s", strerror(errno));
    measure_end(b, m);
    m->client_cpu = timeval_seconds(&ru.ru_utime) + timeval_seconds(&ru.ru_stime);
    out[used] = '\0';
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        describe_status(status, why, sizeof why);
        return pf_error_set(err, PF_E_IO, "'openssl dgst -sha256 %s' failed with %s", path, why);
    }
    eq = strstr(out, "= ");
    if (eq == NULL || strspn(eq + 2, "0123456789abcdef") != PF_DIGEST_HEX_LEN)
        return pf_error_set(err, PF_E_INVALID, "unexpected output from openssl: '%.120s'", out);
    memcpy(hex, eq + 2, PF_DIGEST_HEX_LEN);
    hex[PF_DIGEST_HEX_LEN] = '\0';
    return PF_OK;
}

/* ---- the temp directory ---- */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    if (remove(path) != 0)
        fprintf(stderr, "%s: could not remove '%s': %s\n", PROGRAM, path, strerror(errno));
    return 0;
}

static enum pf_status make_dirs(struct bench *b, struct pf_error *err)
{
    const char *base = b->flags->tmp_dir;
    char tmpl[PATH_MAX];

    if (base == NULL || base[0] == '\0')
        base = getenv("TMPDIR") != NULL && getenv("TMPDIR")[0] != '\0' ? getenv("TMPDIR") : "/tmp";
    if ((size_t)snprintf(tmpl, sizeof tmpl, "%s/pf-files-bench-XXXXXX", base) >= sizeof tmpl)
        return pf_error_set(err, PF_E_INVALID, "temp dir '%.100s' is too long", base);
    if (mkdtemp(tmpl) == NULL)
        return pf_error_set(err, PF_E_IO, "could not create a directory in '%s': %s", base,
                            strerror(errno));
    b->dir = strdup(tmpl);
    if (b->dir == NULL) {
        rmdir(tmpl);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    snprintf(b->blob_path, sizeof b->blob_path, "%s/blob.bin", b->dir);
    snprintf(b->data_dir, sizeof b->data_dir, "%s/data", b->dir);
    snprintf(b->log_path, sizeof b->log_path, "%s/pf-files.log", b->dir);
    return PF_OK;
}

/* The --pf-files flag, or ../services/files/pf-files from this binary's dir. */
static enum pf_status find_pf_files(struct bench *b, struct pf_error *err)
{
    char self[PATH_MAX];
    ssize_t n;

    if (b->flags->pf_files != NULL && b->flags->pf_files[0] != '\0') {
        snprintf(b->pf_files, sizeof b->pf_files, "%s", b->flags->pf_files);
    } else {
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0)
            return pf_error_set(err, PF_E_IO, "could not read /proc/self/exe: %s (use --pf-files)",
                                strerror(errno));
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        if ((size_t)snprintf(b->pf_files, sizeof b->pf_files, "%.*s/../services/files/pf-files",
                             PATH_MAX - 64, self) >= sizeof b->pf_files)
            return pf_error_set(err, PF_E_INVALID, "path of this binary '%.100s' is too long",
                                self);
    }
    if (access(b->pf_files, X_OK) != 0)
        return pf_error_set(err, PF_E_NOT_FOUND,
                            "pf-files binary '%s' is not executable: %s (build it, or give "
                            "--pf-files PATH)",
                            b->pf_files, strerror(errno));
    return PF_OK;
}

static void bench_release(struct bench *b)
{
    if (b->ch != NULL)
        pf_rpc_channel_destroy(b->ch);
    b->ch = NULL;
    stop_server(b);
    if (b->dir == NULL)
        return;
    if (b->flags->keep)
        printf("kept:     %s\n", b->dir);
    else if (nftw(b->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "%s: could not remove '%s': %s\n", PROGRAM, b->dir, strerror(errno));
    free(b->dir);
    b->dir = NULL;
}

/* ---- the measured calls ---- */

static enum pf_status connect_channel(struct bench *b, struct pf_error *err)
{
    struct pf_digest none = {{0}};
    char target[64];
    uint64_t size;

    snprintf(target, sizeof target, "127.0.0.1:%d", b->port);
    b->ch = pf_rpc_channel_create(target, NULL, err);
    if (b->ch == NULL)
        return err->code;
    /* Opens the connection before anything is timed: a Stat of a blob that
     * cannot exist must answer NOT_FOUND. */
    enum pf_status rc = pf_files_stat(b->ch, &none, 10000, &size, err);
    if (rc == PF_E_NOT_FOUND)
        return PF_OK;
    if (rc == PF_OK)
        return pf_error_set(err, PF_E_INTERNAL, "pf-files on %s has a blob of all-zero digest",
                            target);
    return rc;
}

static enum pf_status time_upload(struct bench *b, const char *want_hex, struct pf_digest *digest,
                                  struct measure *m, struct pf_error *err)
{
    struct pf_files_upload_result res;
    char hex[PF_DIGEST_HEX_LEN + 1];
    enum pf_status rc;

    measure_begin(b, m);
    rc = pf_files_upload_path(b->ch, b->blob_path, NULL, CALL_TIMEOUT_MS, &res, err);
    measure_end(b, m);
    if (rc != PF_OK)
        return rc;
    pf_digest_to_hex(&res.digest, hex);
    if (res.size != b->flags->size)
        return pf_error_set(err, PF_E_DATA_LOSS, "upload stored %" PRIu64 " bytes, not %" PRIu64,
                            res.size, b->flags->size);
    if (strcmp(hex, want_hex) != 0)
        return pf_error_set(err, PF_E_DATA_LOSS, "upload stored digest %s but openssl computed %s",
                            hex, want_hex);
    if (res.existed)
        return pf_error_set(err, PF_E_INTERNAL,
                            "blob %s already existed: this round did not measure a new upload",
                            hex);
    *digest = res.digest;
    return PF_OK;
}

static enum pf_status time_download(struct bench *b, const struct pf_digest *digest,
                                    struct measure *m, struct pf_error *err)
{
    const char *sink = b->flags->sink;
    uint64_t received = 0, total = 0;
    enum pf_status rc;
    int fd;

    fd = open(sink, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return pf_error_set(err, PF_E_IO, "could not open sink '%s': %s", sink, strerror(errno));
    measure_begin(b, m);
    rc = pf_files_download_fd(b->ch, digest, 0, fd, CALL_TIMEOUT_MS, &received, &total, err);
    measure_end(b, m);
    if (close(fd) != 0 && rc == PF_OK)
        rc = pf_error_set(err, PF_E_IO, "could not close sink '%s': %s", sink, strerror(errno));
    if (rc != PF_OK)
        return rc;
    if (received != b->flags->size || total != b->flags->size)
        return pf_error_set(err, PF_E_DATA_LOSS,
                            "download received %" PRIu64 " of %" PRIu64 " bytes, expected %" PRIu64,
                            received, total, b->flags->size);
    return PF_OK;
}

static void keep_best(struct bench *b, enum phase ph, const struct measure *m)
{
    if (b->best[ph].seconds == 0 || m->seconds < b->best[ph].seconds)
        b->best[ph] = *m;
}

static enum pf_status run_round(struct bench *b, int64_t round, struct pf_error *err)
{
    static const char *const short_names[PH_COUNT] = {"openssl", "upload", "download-first",
                                                      "download-warm"};
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct measure m[PH_COUNT];
    struct pf_digest digest;
    uint64_t size = b->flags->size;
    enum pf_status rc;

    if (interrupted)
        return pf_error_set(err, PF_E_CANCELLED, "interrupted by signal %d", (int)interrupted);
    rc = tag_test_file(b->blob_path, size, round, err);
    if (rc == PF_OK)
        rc = run_openssl(b, b->blob_path, hex, &m[PH_OPENSSL], err);
    if (rc == PF_OK)
        rc = time_upload(b, hex, &digest, &m[PH_UPLOAD], err);
    if (rc == PF_OK)
        rc = time_download(b, &digest, &m[PH_DOWNLOAD_FIRST], err);
    if (rc == PF_OK)
        rc = time_download(b, &digest, &m[PH_DOWNLOAD_WARM], err);
    if (rc != PF_OK)
        return rc;
    printf("round %" PRId64 ":", round + 1);
    for (int ph = 0; ph < PH_COUNT; ph++) {
        keep_best(b, (enum phase)ph, &m[ph]);
        printf("  %s %.0f", short_names[ph], rate_mib(size, m[ph].seconds));
    }
    printf("  MiB/s\n");
    if (b->flags->verbose) {
        for (int ph = 0; ph < PH_COUNT; ph++)
            printf("  %-15s mono %.6f..%.6f  cpu client %.2f s, pf-files %.2f s\n", short_names[ph],
                   m[ph].start, m[ph].start + m[ph].seconds, m[ph].client_cpu, m[ph].server_cpu);
    }
    fflush(stdout);
    return PF_OK;
}

static void print_results(const struct bench *b)
{
    uint64_t size = b->flags->size;
    double ref = rate_mib(size, b->best[PH_OPENSSL].seconds);
    char load[64];

    printf("\nbest of %" PRId64 " rounds, %.0f MiB blob (MiB/s = 2^20 bytes per second;\n"
           "cpu = user + system seconds in that round; openssl's client cpu is its own):\n",
           b->flags->rounds, (double)size / MIB);
    printf("  %-30s %8s %8s %6s %11s %13s\n", "", "MiB/s", "seconds", "ratio", "client cpu",
           "pf-files cpu");
    for (int ph = 0; ph < PH_COUNT; ph++) {
        const struct measure *m = &b->best[ph];
        double rate = rate_mib(size, m->seconds);
        printf("  %-30s %8.1f %8.3f %6.2f %11.2f %13.2f\n", phase_names[ph], rate, m->seconds,
               ref > 0 ? rate / ref : 0, m->client_cpu, m->server_cpu);
    }
    printf("target >= %.1f of openssl's rate:\n", TARGET_RATIO);
    for (int ph = PH_UPLOAD; ph < PH_COUNT; ph++) {
        double ratio = ref > 0 ? rate_mib(size, b->best[ph].seconds) / ref : 0;
        printf("  %-30s %s (%.2f)\n", phase_names[ph], ratio >= TARGET_RATIO ? "met" : "NOT met",
               ratio);
    }
    load_average(load, sizeof load);
    printf("load:     %s (1, 5, 15 min) after the run\n", load);
}

int main(int argc, char **argv)
{
    struct bench_flags f = {0};
    const struct pf_flag flags[] = {
        {"size", PF_FLAG_SIZE, &f.size, "512M", "bytes in the test blob (K, M, G suffixes)", 4096,
         (int64_t)1 << 40},
        {"rounds", PF_FLAG_INT, &f.rounds, "3", "rounds; the best of each measure is reported", 1,
         100},
        {"pf-files", PF_FLAG_STRING, &f.pf_files, NULL,
         "pf-files binary (default: ../services/files/pf-files next to this binary)", 0, 0},
        {"tmp-dir", PF_FLAG_STRING, &f.tmp_dir, NULL,
         "where the test file and the server's data dir go (default: $TMPDIR or /tmp)", 0, 0},
        {"sink", PF_FLAG_STRING, &f.sink, "/dev/null",
         "file downloads are written to (truncated first; a regular file is left in place)", 0, 0},
        {"keep", PF_FLAG_BOOL, &f.keep, "false", "keep the temp dir (test file, data, log)", 0, 0},
        {"verbose", PF_FLAG_BOOL, &f.verbose, "false",
         "print each phase's CLOCK_MONOTONIC window (for perf report --time) and cpu", 0, 0},
    };
    const struct pf_config cfg = {
        .program = PROGRAM,
        .summary = "Upload and download throughput of pf-files over loopback, against "
                   "`openssl dgst -sha256` of the same file.",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct bench b = {.flags = &f, .clock_ticks = sysconf(_SC_CLK_TCK)};
    struct pf_error err;
    enum pf_status rc;
    int exit_code = 1;
    double start;

    rc = pf_config_parse(&cfg, argc, argv, stdout, NULL, &err);
    if (rc == PF_E_END) {
        exit_code = 0;
        goto out_config;
    }
    if (rc != PF_OK) {
        fprintf(stderr, "%s: %s\n", PROGRAM, err.msg);
        exit_code = 2;
        goto out_config;
    }
    pf_log_init(PF_LOG_WARN, PROGRAM);
    if (install_signals(&err) != PF_OK || find_pf_files(&b, &err) != PF_OK ||
        make_dirs(&b, &err) != PF_OK)
        goto out_fail;
    print_machine(&b);
    start = seconds_now();
    if (make_test_file(b.blob_path, f.size, &err) != PF_OK)
        goto out_fail;
    printf("test file: %.0f MiB of pseudo-random bytes written in %.2f s\n", (double)f.size / MIB,
           seconds_now() - start);
    if (start_server(&b, &err) != PF_OK || connect_channel(&b, &err) != PF_OK)
        goto out_fail;
    printf("pf-files: pid %d on 127.0.0.1:%d\n\n", (int)b.server, b.port);
    fflush(stdout);
    for (int64_t r = 0; r < f.rounds; r++) {
        if (run_round(&b, r, &err) != PF_OK)
            goto out_fail;
    }
    print_results(&b);
    exit_code = 0;
    goto out_release;
out_fail:
    if (interrupted)
        fprintf(stderr, "%s: interrupted by signal %d (%s); cleaning up\n", PROGRAM,
                (int)interrupted, err.msg);
    else
        fprintf(stderr, "%s: %s\n", PROGRAM, err.msg);
out_release:
    bench_release(&b);
out_config:
    pf_config_release(&cfg);
    return exit_code;
}
