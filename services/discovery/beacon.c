/* The beacon sender thread (see beacon.h). Send errors are logged once per
 * streak and counted; the thread keeps trying (an interface may come up
 * later). */
#include "beacon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "discovery_client.h"
#include "log.h"
#include "timeutil.h"

struct pf_beacon_sender {
    int fd;
    struct sockaddr_in to;
    char payload[PF_BEACON_MAX_BYTES + 1];
    size_t len;
    int64_t interval_ms;
    pthread_t thread;
    atomic_bool stop;
    struct pf_metric *m_sent, *m_errors;
};

static void *sender_main(void *arg)
{
    struct pf_beacon_sender *s = arg;
    bool failing = false;

    while (!atomic_load(&s->stop)) {
        ssize_t n = sendto(s->fd, s->payload, s->len, 0, (struct sockaddr *)&s->to, sizeof(s->to));
        if (n == (ssize_t)s->len) {
            pf_metric_add(s->m_sent, NULL, 1);
            if (failing)
                pf_log_info("beacon_sending", "recovered=true");
            failing = false;
        } else {
            pf_metric_add(s->m_errors, NULL, 1);
            if (!failing)
                pf_log_warn("beacon_send_failed", "error=\"%s\"", strerror(errno));
            failing = true;
        }
        for (int64_t slept = 0; slept < s->interval_ms && !atomic_load(&s->stop); slept += 50)
            pf_time_sleep_ms(s->interval_ms - slept < 50 ? s->interval_ms - slept : 50);
    }
    return NULL;
}

/* Picks the outgoing interface: a name (by index) or an IPv4 address. */
static enum pf_status set_interface(int fd, const char *interface, struct pf_error *err)
{
    struct ip_mreqn mreq;
    memset(&mreq, 0, sizeof(mreq));
    if (inet_pton(AF_INET, interface, &mreq.imr_address) != 1) {
        unsigned idx = if_nametoindex(interface);
        if (idx == 0)
            return pf_error_set(err, PF_E_UNAVAILABLE,
                                "--beacon-interface '%.64s': no such interface", interface);
        mreq.imr_ifindex = (int)idx;
    }
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mreq, sizeof(mreq)) != 0)
        return pf_error_set(err, PF_E_UNAVAILABLE, "--beacon-interface '%.64s': %s", interface,
                            strerror(errno));
    return PF_OK;
}

enum pf_status pf_beacon_sender_start(const struct pf_beacon_sender_opts *opts,
                                      struct pf_beacon_sender **out, struct pf_error *err)
{
    struct pf_beacon_sender *s;
    unsigned char ttl = 1, loop = 1;
    enum pf_status rc;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    s->fd = -1;
    rc =
        pf_beacon_format(opts->farm, opts->discovery, s->payload, sizeof(s->payload), &s->len, err);
    if (rc != PF_OK)
        goto out_free;
    s->to.sin_family = AF_INET;
    s->to.sin_port = htons((uint16_t)opts->port);
    if (opts->port < 1 || opts->port > 65535 ||
        inet_pton(AF_INET, opts->group, &s->to.sin_addr) != 1 ||
        !IN_MULTICAST(ntohl(s->to.sin_addr.s_addr))) {
        rc = pf_error_set(err, PF_E_INVALID,
                          "--beacon-group '%.64s' port %d: want an IPv4 multicast group and a "
                          "port in 1..65535",
                          opts->group, opts->port);
        goto out_free;
    }
    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        rc =
            pf_error_set(err, PF_E_UNAVAILABLE, "could not open a UDP socket: %s", strerror(errno));
        goto out_free;
    }
    /* One hop: the beacon stays on the local link. Looped back so agents on
     * this host hear it too. */
    setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl));
    setsockopt(s->fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop));
    if (opts->interface != NULL && opts->interface[0] != '\0') {
        rc = set_interface(s->fd, opts->interface, err);
        if (rc != PF_OK)
            goto out_free;
    }
    s->interval_ms = opts->interval_ms > 0 ? opts->interval_ms : 2000;
    atomic_init(&s->stop, false);
    s->m_sent = pf_metrics_counter(opts->metrics, "printfarm_discovery_beacons_sent_total",
                                   "LAN beacons sent", NULL);
    s->m_errors = pf_metrics_counter(opts->metrics, "printfarm_discovery_beacon_errors_total",
                                     "LAN beacons that could not be sent", NULL);
    if (pthread_create(&s->thread, NULL, sender_main, s) != 0) {
        rc = pf_error_set(err, PF_E_RESOURCE, "could not start the beacon thread");
        goto out_free;
    }
    pf_log_info("beacon_started", "group=%s port=%d interval_ms=%lld farm=%s discovery=%s",
                opts->group, opts->port, (long long)s->interval_ms, opts->farm, opts->discovery);
    *out = s;
    return PF_OK;
out_free:
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    return rc;
}

void pf_beacon_sender_stop(struct pf_beacon_sender *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    free(s);
}
