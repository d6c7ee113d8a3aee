/* The LAN beacon sender: a thread that sends pf-discovery's address to a UDP
 * multicast group every interval (TTL 1: it stays on the local link), so an
 * agent started without an address finds its farm. The payload and its
 * parser are in lib/discovery_client (pf_beacon_format / pf_beacon_parse),
 * shared with the listener. */
#ifndef PF_DISC_BEACON_H
#define PF_DISC_BEACON_H

#include <stdint.h>
#include "metrics.h"
#include "status.h"

struct pf_beacon_sender_opts {
    const char *group;     /* IPv4 multicast group */
    int port;              /* UDP port */
    const char *interface; /* interface name or IPv4 address to send on; NULL/"" = routing */
    int64_t interval_ms;
    const char *farm;      /* farm name */
    const char *discovery; /* advertised HOST:PORT (host 0.0.0.0: "use my source address") */
    struct pf_metrics *metrics;
};

struct pf_beacon_sender;

/* Checks the options, opens the socket and starts the thread (the first
 * beacon goes out at once). PF_E_INVALID for a bad group, farm or address;
 * PF_E_UNAVAILABLE when the socket or interface cannot be set up. */
enum pf_status pf_beacon_sender_start(const struct pf_beacon_sender_opts *opts,
                                      struct pf_beacon_sender **out,
                                      struct pf_error *err) PF_MUST_CHECK;
/* Stops the thread and frees. NULL is ignored. */
void pf_beacon_sender_stop(struct pf_beacon_sender *s);

#endif
