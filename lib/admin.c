/* The admin HTTP server: libmicrohttpd with its own polling thread, serving
 * /metrics, /healthz and /readyz as GET (and HEAD) only. It binds the address it
 * is given through MHD_OPTION_SOCK_ADDR (IPv4 or bracketed IPv6, port 0 picks a
 * free port, read back with MHD_DAEMON_INFO_BIND_PORT) and routes libmicrohttpd's
 * own messages into the process log, so a failure to bind can be reported with
 * its reason. A few process metrics (start time, resident memory, open file
 * descriptors) and a request counter are registered in the borrowed registry
 * and refreshed on each scrape. */
#include "admin.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>

#include "config.h"
#include "log.h"
#include "timeutil.h"

#define ADMIN_HOST_MAX       256
#define ADMIN_WHY_MAX        512
#define ADMIN_METRICS_MAX    (16u << 20) /* a scrape larger than this is a bug */
#define ADMIN_CONN_LIMIT     64
#define ADMIN_CONN_TIMEOUT_S 10

static const char metrics_type[] = "text/plain; version=0.0.4; charset=utf-8";
static const char text_type[] = "text/plain; charset=utf-8";

struct pf_admin {
    struct MHD_Daemon *daemon;
    struct pf_metrics *metrics; /* borrowed */
    pf_admin_ready_fn ready;
    void *ready_arg;
    int port;
    char listen[ADMIN_HOST_MAX + 16];
    struct sockaddr_storage addr; /* kept for the daemon's lifetime */
    char last_mhd_error[256];     /* the last message libmicrohttpd logged */

    struct pf_metric *requests; /* printfarm_admin_requests_total{path,code} */
    struct pf_metric *resident_bytes;
    struct pf_metric *open_fds;
};

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    struct pf_admin *a = cls;
    char msg[sizeof a->last_mhd_error];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '.'))
        msg[--len] = '\0';
    memcpy(a->last_mhd_error, msg, sizeof msg);
    char quoted[sizeof msg + 8];
    pf_log_warn("admin_http_error", "listen=%s msg=%s", a->listen,
                pf_log_quote(msg, quoted, sizeof quoted));
}

/* Reads the resident set size from /proc; false when unavailable. */
static bool resident_bytes(double *out)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return false;
    unsigned long size_pages, resident_pages;
    int n = fscanf(f, "%lu %lu", &size_pages, &resident_pages);
    fclose(f);
    if (n != 2)
        return false;
    *out = (double)resident_pages * (double)sysconf(_SC_PAGESIZE);
    return true;
}

static bool open_fd_count(double *out)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return false;
    long count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] != '.')
            count++;
    }
    closedir(dir);
    *out = (double)(count > 0 ? count - 1 : 0); /* not counting the directory itself */
    return true;
}

static void register_process_metrics(struct pf_admin *a)
{
    struct pf_metric *start =
        pf_metrics_gauge(a->metrics, "process_start_time_seconds",
                         "Start time of the process since the unix epoch in seconds.", NULL);
    pf_metric_set(start, NULL, (double)pf_time_wall_ms() / 1000.0);
    a->resident_bytes = pf_metrics_gauge(a->metrics, "process_resident_memory_bytes",
                                         "Resident memory size in bytes.", NULL);
    a->open_fds =
        pf_metrics_gauge(a->metrics, "process_open_fds", "Number of open file descriptors.", NULL);
    a->requests = pf_metrics_counter(a->metrics, "printfarm_admin_requests_total",
                                     "Requests served by the admin HTTP server.", "path,code");
}

static void refresh_process_metrics(struct pf_admin *a)
{
    double v;
    if (resident_bytes(&v))
        pf_metric_set(a->resident_bytes, NULL, v);
    if (open_fd_count(&v))
        pf_metric_set(a->open_fds, NULL, v);
}

/* Queues a response whose body is copied or handed over; counts the request. */
static enum MHD_Result respond(struct pf_admin *a, struct MHD_Connection *conn,
                               const char *path_label, unsigned int code, const char *type,
                               char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (resp == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, code, resp);
    MHD_destroy_response(resp);

    char code_text[8];
    snprintf(code_text, sizeof code_text, "%u", code);
    const char *labels[2] = {path_label, code_text};
    pf_metric_add(a->requests, labels, 1);
    return ret;
}

static enum MHD_Result respond_text(struct pf_admin *a, struct MHD_Connection *conn,
                                    const char *path_label, unsigned int code, const char *text)
{
    return respond(a, conn, path_label, code, text_type, (char *)text, strlen(text),
                   MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result serve_metrics(struct pf_admin *a, struct MHD_Connection *conn)
{
    refresh_process_metrics(a);
    struct pf_buf body;
    pf_buf_init(&body, ADMIN_METRICS_MAX);
    enum pf_status st = pf_metrics_render(a->metrics, &body);
    if (st != PF_OK) {
        pf_buf_release(&body);
        pf_log_error("admin_metrics_failed", "status=%s", pf_status_name(st));
        return respond_text(a, conn, "/metrics", MHD_HTTP_INTERNAL_SERVER_ERROR,
                            "could not render metrics\n");
    }
    size_t len;
    char *data = pf_buf_detach(&body, &len);
    if (data == NULL)
        return MHD_NO;
    return respond(a, conn, "/metrics", MHD_HTTP_OK, metrics_type, data, len,
                   MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result serve_readyz(struct pf_admin *a, struct MHD_Connection *conn)
{
    struct pf_buf why;
    pf_buf_init(&why, ADMIN_WHY_MAX);
    if (a->ready == NULL || a->ready(a->ready_arg, &why)) {
        pf_buf_release(&why);
        return respond_text(a, conn, "/readyz", MHD_HTTP_OK, "ready\n");
    }
    struct pf_buf body;
    pf_buf_init(&body, 0);
    enum pf_status st =
        pf_buf_printf(&body, "not ready: %s\n", why.len > 0 ? why.data : "no reason given");
    pf_buf_release(&why);
    if (st != PF_OK) {
        pf_buf_release(&body);
        return respond_text(a, conn, "/readyz", MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    }
    size_t len;
    char *data = pf_buf_detach(&body, &len);
    return respond(a, conn, "/readyz", MHD_HTTP_SERVICE_UNAVAILABLE, text_type, data, len,
                   MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct pf_admin *a = cls;
    const char *path_label = "other";
    if (strcmp(url, "/metrics") == 0)
        path_label = "/metrics";
    else if (strcmp(url, "/healthz") == 0)
        path_label = "/healthz";
    else if (strcmp(url, "/readyz") == 0)
        path_label = "/readyz";

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_text(a, conn, path_label, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(a, conn);
    if (strcmp(url, "/healthz") == 0)
        return respond_text(a, conn, path_label, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(a, conn);
    return respond_text(a, conn, path_label, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* The reason a bind failed, from errno when it says something, else from the
 * last message libmicrohttpd logged. */
static const char *bind_failure_reason(const struct pf_admin *a, int saved_errno)
{
    switch (saved_errno) {
    case EADDRINUSE:
        return "address in use";
    case EADDRNOTAVAIL:
        return "address not available on this host";
    case EACCES:
    case EPERM:
        return "permission denied";
    default:
        break;
    }
    if (strstr(a->last_mhd_error, "in use") != NULL)
        return "address in use";
    if (a->last_mhd_error[0] != '\0')
        return a->last_mhd_error;
    return "unknown error";
}

/* Resolves host:port into a->addr; IPv6 or IPv4 per the address family found. */
static enum pf_status resolve(struct pf_admin *a, const char *host, int port, struct pf_error *err)
{
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port_text, &hints, &res);
    if (rc != 0)
        return pf_error_set(err, PF_E_INVALID,
                            "could not listen on '%s' for the admin server: cannot resolve "
                            "'%s': %s",
                            a->listen, host, gai_strerror(rc));
    /* Prefer IPv4 for names like "localhost" that resolve to both. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *it = res; it != NULL; it = it->ai_next) {
        if (it->ai_family == AF_INET) {
            pick = it;
            break;
        }
    }
    memcpy(&a->addr, pick->ai_addr, pick->ai_addrlen);
    freeaddrinfo(res);
    return PF_OK;
}

struct pf_admin *pf_admin_start(const char *listen, struct pf_metrics *metrics,
                                pf_admin_ready_fn ready, void *ready_arg, struct pf_error *err)
{
    char host[ADMIN_HOST_MAX];
    int port;
    if (metrics == NULL) {
        pf_error_set(err, PF_E_INVALID, "the admin server needs a metrics registry");
        return NULL;
    }
    if (pf_config_parse_hostport(listen, host, sizeof host, &port, err) != PF_OK)
        return NULL;
    struct pf_admin *a = calloc(1, sizeof *a);
    if (a == NULL) {
        pf_error_set(err, PF_E_RESOURCE, "out of memory starting the admin server");
        return NULL;
    }
    snprintf(a->listen, sizeof a->listen, "%s", listen);
    a->metrics = metrics;
    a->ready = ready;
    a->ready_arg = ready_arg;
    if (resolve(a, host, port, err) != PF_OK)
        goto out_free_admin;

    /* Before the daemon starts: its thread reads these without a lock. */
    register_process_metrics(a);

    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    if (a->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    a->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle_request, a,
                                 MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, a, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&a->addr, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned int)ADMIN_CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
                                 (unsigned int)ADMIN_CONN_TIMEOUT_S, MHD_OPTION_END);
    if (a->daemon == NULL) {
        int saved_errno = errno;
        pf_error_set(err, PF_E_UNAVAILABLE, "could not listen on '%s' for the admin server: %s",
                     listen, bind_failure_reason(a, saved_errno));
        goto out_free_admin;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info != NULL && info->port != 0 ? info->port : port;
    pf_log_info("admin_listening", "listen=%s port=%d", a->listen, a->port);
    return a;

out_free_admin:
    free(a);
    return NULL;
}

int pf_admin_port(const struct pf_admin *a)
{
    return a != NULL ? a->port : 0;
}

void pf_admin_stop(struct pf_admin *a)
{
    if (a == NULL)
        return;
    MHD_stop_daemon(a->daemon);
    free(a);
}
