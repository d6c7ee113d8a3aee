/* Leadership of pf-scheduler: a thread that contends for the Redis lease
 * (SET NX PX, then compare-and-extend every --lease-renew), fences a won
 * lease by incrementing leader_epoch in PostgreSQL (which waits for the old
 * leader's open fenced transactions, since they hold the row FOR SHARE), and
 * steps down at once when a renew fails, the lease's validity runs out by the
 * pf_lease_state arithmetic, or a transaction finds a newer epoch. Followers
 * learn the leader's advertise address from the lease value
 * ("ADVERTISE|instance") so that every RPC they refuse names it in the
 * `printfarm-leader` trailer. The thread owns its own Redis client and
 * database connection; everything other threads read is atomic or under mu. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "lease.h"
#include "log.h"
#include "modules.h"
#include "redis.h"
#include "rpc/client.h"
#include "timeutil.h"

#define DB_PING_EVERY_MS 1000
#define DB_OK_FOR_MS     5000

struct pf_sched_leader {
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool wake;                         /* under mu */
    char holder_addr[PF_LEASE_ID_MAX]; /* under mu: the leader's advertise address */
    int64_t holder_until;              /* under mu: monotonic ms after which holder_addr is stale */
    atomic_bool is_leader;
    atomic_bool release_wanted; /* a step-down asks the thread to release */
    atomic_uint_fast64_t epoch;
    atomic_int_fast64_t valid_until; /* monotonic ms */
    atomic_int_fast64_t since;       /* monotonic ms of the last election */
    atomic_int_fast64_t db_ok_at;    /* monotonic ms of the last good DB answer */
    atomic_bool role_known;
    struct pf_redis *redis;  /* the thread's */
    struct pf_pg_conn *conn; /* the thread's */
    struct pf_lease lease;
    bool lease_ready;
    int64_t last_ping;
    struct pf_metric *m_leader, *m_epoch, *m_elections, *m_stepdowns;
};

enum pf_status pf_sched_leader_create(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_leader *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    pthread_condattr_t ca;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the waits below use it */
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&l->stop, false);
    atomic_init(&l->is_leader, false);
    atomic_init(&l->release_wanted, false);
    atomic_init(&l->epoch, 0);
    atomic_init(&l->valid_until, INT64_MIN);
    atomic_init(&l->since, 0);
    atomic_init(&l->db_ok_at, INT64_MIN / 2);
    atomic_init(&l->role_known, false);
    l->m_leader = pf_metrics_gauge(s->metrics, "printfarm_scheduler_leader",
                                   "1 while this replica is the leader", NULL);
    l->m_epoch = pf_metrics_gauge(s->metrics, "printfarm_scheduler_epoch",
                                  "the leader epoch this replica fenced last", NULL);
    l->m_elections = pf_metrics_counter(s->metrics, "printfarm_scheduler_elections_total",
                                        "times this replica became leader", NULL);
    l->m_stepdowns = pf_metrics_counter(s->metrics, "printfarm_scheduler_step_downs_total",
                                        "times this replica stopped being leader", NULL);
    pf_metric_set(l->m_leader, NULL, 0);
    s->leader = l;
    return PF_OK;
}

bool pf_sched_is_leader(struct pf_sched *s, uint64_t *epoch)
{
    struct pf_sched_leader *l = s->leader;
    if (l == NULL || !atomic_load(&l->is_leader))
        return false;
    if (pf_time_mono_ms() >= atomic_load(&l->valid_until))
        return false;
    if (epoch != NULL)
        *epoch = atomic_load(&l->epoch);
    return true;
}

void pf_sched_leader_address(struct pf_sched *s, char *out, size_t out_size)
{
    struct pf_sched_leader *l = s->leader;
    if (out_size == 0)
        return;
    out[0] = '\0';
    if (l == NULL)
        return;
    if (pf_sched_is_leader(s, NULL)) {
        snprintf(out, out_size, "%s", s->cfg.advertise != NULL ? s->cfg.advertise : "");
        return;
    }
    pthread_mutex_lock(&l->mu);
    if (pf_time_mono_ms() < l->holder_until)
        snprintf(out, out_size, "%s", l->holder_addr);
    pthread_mutex_unlock(&l->mu);
}

int64_t pf_sched_leader_since(struct pf_sched *s)
{
    return s->leader != NULL ? atomic_load(&s->leader->since) : 0;
}

bool pf_sched_refuse_if_follower(struct pf_sched *s, struct pf_rpc_call *call)
{
    char addr[PF_LEASE_ID_MAX], msg[PF_LEASE_ID_MAX + 128];

    if (pf_sched_is_leader(s, NULL))
        return false;
    pf_sched_leader_address(s, addr, sizeof(addr));
    if (addr[0] != '\0' && s->cfg.advertise != NULL && strcmp(addr, s->cfg.advertise) != 0) {
        pf_rpc_call_set_trailer(call, PF_RPC_LEADER_KEY, addr);
        snprintf(msg, sizeof(msg),
                 "this scheduler replica is not the leader: retry at %s (printfarm-leader)", addr);
    } else {
        snprintf(msg, sizeof(msg),
                 "this scheduler replica is not the leader and no leader is known yet: "
                 "retry shortly");
    }
    pf_rpc_call_finish(call, PF_E_UNAVAILABLE, msg);
    return true;
}

static void wake_thread(struct pf_sched_leader *l)
{
    pthread_mutex_lock(&l->mu);
    l->wake = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void pf_sched_step_down(struct pf_sched *s, const char *why)
{
    struct pf_sched_leader *l = s->leader;
    if (l == NULL || !atomic_exchange(&l->is_leader, false))
        return;
    atomic_store(&l->valid_until, INT64_MIN);
    pf_log(pf_signals_stop_requested() ? PF_LOG_INFO : PF_LOG_WARN, "leader_step_down",
           "epoch=%llu why=\"%s\"", (unsigned long long)atomic_load(&l->epoch),
           why != NULL ? why : "");
    pf_metric_set(l->m_leader, NULL, 0);
    pf_metric_add(l->m_stepdowns, NULL, 1);
    /* Streams end naming the new leader when it is known (holder_addr still
     * names this replica otherwise, and then no trailer is set). */
    pf_sched_agents_end_all(s, "this scheduler replica is no longer the leader");
    pf_sched_events_end_all(s, "this scheduler replica is no longer the leader");
    atomic_store(&l->release_wanted, true);
    wake_thread(l);
}

bool pf_sched_leader_ready(struct pf_sched *s, struct pf_buf *why)
{
    struct pf_sched_leader *l = s->leader;
    enum pf_status rc = PF_OK;
    if (l == NULL)
        return false;
    if (pf_time_mono_ms() - atomic_load(&l->db_ok_at) > DB_OK_FOR_MS)
        rc = pf_buf_printf(why, "database not reachable");
    else if (!pf_sched_is_leader(s, NULL) && !atomic_load(&l->role_known))
        rc = pf_buf_printf(why, "no leader known yet");
    else
        return true;
    (void)rc;
    return false;
}

/* "HOST:PORT|instance" -> "HOST:PORT" */
static void holder_to_addr(const char *holder, char *out, size_t out_size)
{
    const char *bar = strchr(holder, '|');
    size_t n = bar != NULL ? (size_t)(bar - holder) : strlen(holder);
    if (n >= out_size)
        n = out_size - 1;
    memcpy(out, holder, n);
    out[n] = '\0';
}

/* Records the lease holder and until when (monotonic ms) its lease is known
 * to be live: refusals name its address only until then. Every round reads
 * the key again, so a live leader's address stays named; a dead one's goes
 * when its key expires, even if this thread stalls (a slow fence or Redis). */
static void set_holder(struct pf_sched *s, const char *holder, int64_t until)
{
    struct pf_sched_leader *l = s->leader;
    char addr[PF_LEASE_ID_MAX];
    holder_to_addr(holder != NULL ? holder : "", addr, sizeof(addr));
    pthread_mutex_lock(&l->mu);
    snprintf(l->holder_addr, sizeof(l->holder_addr), "%s", addr);
    l->holder_until = addr[0] != '\0' ? until : INT64_MIN;
    pthread_mutex_unlock(&l->mu);
    atomic_store(&l->role_known, addr[0] != '\0');
}

/* KEYS[1] lease key, ARGV[1] the holder just read: the key's PTTL while it
 * still names that holder, -3 when it names another or is gone. */
static const char pttl_script[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                  "  return redis.call('PTTL', KEYS[1])\n"
                                  "end\n"
                                  "return -3\n";

/* On a follower, after an acquire found the lease held by holder (NULL or ""
 * = nobody): names holder until its key expires, by the key's own PTTL
 * counted from before the request was sent (so never later than Redis drops
 * it). A key that changed or vanished in between, or a Redis error, leaves
 * no leader known until the next round reads it again. */
static void follow(struct pf_sched *s, const char *holder)
{
    struct pf_sched_leader *l = s->leader;
    struct pf_error err;
    long long pttl = -3;
    int64_t sent = pf_time_mono_ms();

    if (holder == NULL || holder[0] == '\0') {
        set_holder(s, "", 0);
        return;
    }
    const char *const argv[] = {"EVAL", pttl_script, "1", PF_SCHED_LEASE_KEY, holder};
    if (pf_redis_command_integer(l->redis, 5, argv, NULL, &pttl, &err) != PF_OK) {
        pf_log_warn("lease_pttl_failed", "error=\"%s\"", err.msg);
        pttl = -3;
    }
    if (pttl == -1) /* no expiry: not a key we wrote; trust it for one ttl */
        pttl = s->cfg.lease_ttl_ms;
    if (pttl < 0) {
        set_holder(s, "", 0);
        return;
    }
    set_holder(s, holder, sent + pttl);
}

static bool ensure_clients(struct pf_sched *s)
{
    struct pf_sched_leader *l = s->leader;
    struct pf_error err;

    if (l->redis == NULL) {
        int64_t t = s->cfg.lease_ttl_ms / 3;
        struct pf_redis_options ro = {
            .connect_timeout_ms = (int)(t < 100 ? 100 : t),
            .command_timeout_ms = (int)(t < 100 ? 100 : t),
        };
        if (pf_redis_create(s->cfg.redis_url, &ro, &l->redis, &err) != PF_OK) {
            pf_log_warn("redis_unavailable", "error=\"%s\"", err.msg);
            return false;
        }
    }
    if (!l->lease_ready) {
        int64_t margin = s->cfg.lease_ttl_ms / 5;
        if (pf_lease_init(&l->lease, l->redis, PF_SCHED_LEASE_KEY, s->cfg.instance_id,
                          s->cfg.lease_ttl_ms, margin, &err) != PF_OK) {
            pf_log_error("lease_init_failed", "error=\"%s\"", err.msg);
            return false;
        }
        l->lease_ready = true;
    }
    if (l->conn == NULL) {
        if (pf_pg_conn_create(s->cfg.database_url, 2000, &l->conn, &err) != PF_OK) {
            pf_log_warn("database_unavailable", "error=\"%s\"", err.msg);
            return false;
        }
        atomic_store(&l->db_ok_at, pf_time_mono_ms());
    }
    return true;
}

/* UPDATE leader_epoch: waits (up to the lease's validity) for the old
 * leader's fenced transactions, which hold the row FOR SHARE. */
static enum pf_status fence(struct pf_sched *s, int64_t *epoch, struct pf_error *err)
{
    struct pf_sched_leader *l = s->leader;
    char timeout[32];
    const char *p[1] = {timeout};
    const char *h[1] = {s->cfg.advertise};
    int64_t left = pf_lease_state_valid_until(&l->lease.state) - pf_time_mono_ms();
    enum pf_status rc;

    if (left < 50)
        left = 50;
    snprintf(timeout, sizeof(timeout), "%lldms", (long long)left);
    rc = pf_pg_begin(l->conn, PF_PG_READ_COMMITTED, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_pg_exec(l->conn, "SELECT set_config('lock_timeout', $1, true)", 1, p, NULL, err);
    if (rc == PF_OK)
        rc = pf_pg_exec_int64(l->conn,
                              "UPDATE leader_epoch SET epoch = epoch + 1, holder = $1, "
                              "updated_at = now() WHERE id = 1 RETURNING epoch",
                              1, h, epoch, err);
    if (rc != PF_OK) {
        pf_pg_rollback(l->conn);
        return rc;
    }
    return pf_pg_commit(l->conn, err);
}

static void announce(struct pf_sched *s, uint64_t epoch)
{
    struct pf_sched_leader *l = s->leader;
    struct pf_error err;
    char text[PF_LEASE_ID_MAX + 64];
    struct pf_sched_event ev = {.kind = PRINTFARM__V1__EVENT_KIND__EVENT_KIND_LEADER_ELECTED,
                                .text = text};

    snprintf(text, sizeof(text), "scheduler %s became leader with epoch %llu", s->cfg.advertise,
             (unsigned long long)epoch);
    if (pf_sched_tx_begin(s, l->conn, &err) != PF_OK)
        goto out_fail;
    if (pf_sched_event_add(l->conn, &ev, NULL, &err) != PF_OK) {
        pf_pg_rollback(l->conn);
        goto out_fail;
    }
    if (pf_sched_tx_commit(s, l->conn, &err) != PF_OK)
        goto out_fail;
    return;
out_fail:
    pf_log_warn("leader_event_failed", "error=\"%s\"", err.msg);
}

static void become_leader(struct pf_sched *s)
{
    struct pf_sched_leader *l = s->leader;
    struct pf_error err;
    int64_t epoch = 0;
    enum pf_status rc = fence(s, &epoch, &err);
    int64_t now = pf_time_mono_ms();

    if (rc != PF_OK) {
        pf_log_warn("leader_fence_failed", "error=\"%s\"", err.msg);
        if (rc == PF_E_UNAVAILABLE)
            atomic_store(&l->db_ok_at, INT64_MIN / 2);
        /* Hold on to the lease: the next round renews it and fences again. */
        return;
    }
    atomic_store(&l->db_ok_at, now);
    if (!pf_lease_state_is_holder(&l->lease.state, now)) {
        pf_log_warn("leader_fence_too_late", "epoch=%lld", (long long)epoch);
        return;
    }
    atomic_store(&l->epoch, (uint64_t)epoch);
    atomic_store(&l->valid_until, pf_lease_state_valid_until(&l->lease.state));
    atomic_store(&l->since, now);
    atomic_store(&l->release_wanted, false);
    set_holder(s, s->cfg.advertise, pf_lease_state_valid_until(&l->lease.state));
    atomic_store(&l->is_leader, true);
    pf_metric_set(l->m_leader, NULL, 1);
    pf_metric_set(l->m_epoch, NULL, (double)epoch);
    pf_metric_add(l->m_elections, NULL, 1);
    pf_log_info("leader_elected", "epoch=%lld advertise=%s", (long long)epoch, s->cfg.advertise);
    announce(s, (uint64_t)epoch);
    pf_sched_dispatch_kick(s);
}

static void release_lease(struct pf_sched_leader *l)
{
    struct pf_error err;
    bool released = false;
    if (!l->lease_ready)
        return;
    if (pf_lease_release(&l->lease, &released, &err) != PF_OK)
        pf_log_warn("lease_release_failed", "error=\"%s\"", err.msg);
    else if (released)
        pf_log_info("lease_released", NULL);
}

static void round_once(struct pf_sched *s)
{
    struct pf_sched_leader *l = s->leader;
    struct pf_error err;
    int64_t now = pf_time_mono_ms();

    if (atomic_exchange(&l->release_wanted, false))
        release_lease(l);
    if (!ensure_clients(s)) {
        if (atomic_load(&l->is_leader) && now >= atomic_load(&l->valid_until))
            pf_sched_step_down(s, "lease validity ran out (redis or database unreachable)");
        return;
    }
    if (atomic_load(&l->is_leader)) {
        bool held = false;
        enum pf_status rc = pf_lease_renew(&l->lease, &held, &err);
        now = pf_time_mono_ms();
        if (rc != PF_OK) {
            pf_log_warn("lease_renew_failed", "error=\"%s\"", err.msg);
            if (!pf_lease_state_is_holder(&l->lease.state, now))
                pf_sched_step_down(s, "lease renew failed and its validity ran out");
        } else if (!held) {
            char why[PF_LEASE_ID_MAX + 32];
            snprintf(why, sizeof(why), "lease now held by '%s'", l->lease.state.holder);
            follow(s, l->lease.state.holder);
            pf_sched_step_down(s, why);
        } else {
            atomic_store(&l->valid_until, pf_lease_state_valid_until(&l->lease.state));
        }
    } else {
        bool won = false;
        enum pf_status rc = pf_lease_acquire(&l->lease, &won, &err);
        if (rc != PF_OK) {
            pf_log_warn("lease_acquire_failed", "error=\"%s\"", err.msg);
            set_holder(s, "", 0);
        } else if (won) {
            /* The lease names this replica now, not the one before: until
             * the fence is through, no leader is known. */
            set_holder(s, s->cfg.advertise, pf_lease_state_valid_until(&l->lease.state));
            if (!atomic_load(&l->stop) && !pf_signals_stop_requested())
                become_leader(s);
        } else {
            follow(s, l->lease.state.holder);
        }
    }
    now = pf_time_mono_ms();
    if (now - l->last_ping >= DB_PING_EVERY_MS) {
        l->last_ping = now;
        if (pf_pg_ping(l->conn, &err) == PF_OK)
            atomic_store(&l->db_ok_at, pf_time_mono_ms());
        else
            pf_log_warn("database_ping_failed", "error=\"%s\"", err.msg);
    }
}

static void *leader_main(void *arg)
{
    struct pf_sched *s = arg;
    struct pf_sched_leader *l = s->leader;

    while (!atomic_load(&l->stop)) {
        if (pf_signals_stop_requested()) {
            /* Hand leadership over at once rather than after the drain. */
            pf_sched_step_down(s, "shutting down");
            break;
        }
        round_once(s);
        int64_t period = s->cfg.lease_renew_ms;
        if (!atomic_load(&l->is_leader) && l->lease_ready && l->lease.state.held)
            period = period / 3 + 1; /* won the lease but not fenced yet: retry soon */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += period / 1000;
        ts.tv_nsec += (period % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&l->mu);
        while (!l->wake && !atomic_load(&l->stop)) {
            if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT)
                break;
        }
        l->wake = false;
        pthread_mutex_unlock(&l->mu);
    }
    pf_sched_step_down(s, "shutting down");
    if (l->redis != NULL)
        release_lease(l);
    atomic_store(&l->release_wanted, false);
    return NULL;
}

enum pf_status pf_sched_leader_start(struct pf_sched *s, struct pf_error *err)
{
    struct pf_sched_leader *l = s->leader;
    if (pthread_create(&l->thread, NULL, leader_main, s) != 0)
        return pf_error_set(err, PF_E_RESOURCE, "could not start the leader thread");
    l->started = true;
    return PF_OK;
}

void pf_sched_leader_stop(struct pf_sched *s)
{
    struct pf_sched_leader *l = s->leader;
    if (l == NULL || !l->started)
        return;
    atomic_store(&l->stop, true);
    wake_thread(l);
    pthread_join(l->thread, NULL);
    l->started = false;
}

void pf_sched_leader_destroy(struct pf_sched *s)
{
    struct pf_sched_leader *l = s->leader;
    if (l == NULL)
        return;
    pf_sched_leader_stop(s);
    pf_redis_destroy(l->redis);
    pf_pg_conn_destroy(l->conn);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
    s->leader = NULL;
}
