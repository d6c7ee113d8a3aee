/* Fenced transactions, event rows and ids for pf-scheduler.
 *
 * Fencing: every state-changing transaction starts by reading leader_epoch
 * FOR SHARE and compares it with this replica's epoch. A new leader's
 * `UPDATE leader_epoch SET epoch = epoch + 1` waits for those share locks, so
 * once it commits no transaction of the old leader can commit a write: the
 * old leader's next transaction sees the newer epoch, aborts and steps down.
 *
 * Events get their numbers from the event_seq row inside the writing
 * transaction: numbers are gapless (a rollback gives its number back) and,
 * because the row lock is held to commit, transactions commit in number order,
 * so a reader that sees event N has every event before it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "log.h"
#include "sched.h"
#include "timeutil.h"

#define DB_WAIT_MS 5000

/* The highest event number written by this thread's open transaction. */
static __thread uint64_t tx_last_seq;

enum pf_status pf_sched_tx_begin(struct pf_sched *s, struct pf_pg_conn *conn, struct pf_error *err)
{
    uint64_t mine = 0;
    int64_t current;
    enum pf_status rc;

    if (!pf_sched_is_leader(s, &mine))
        return pf_error_set(err, PF_E_ABORTED, "this scheduler replica is not the leader");
    rc = pf_pg_begin(conn, PF_PG_READ_COMMITTED, err);
    if (rc != PF_OK)
        return rc;
    tx_last_seq = 0;
    rc = pf_pg_exec_int64(conn, "SELECT epoch FROM leader_epoch WHERE id = 1 FOR SHARE", 0, NULL,
                          &current, err);
    if (rc != PF_OK) {
        pf_pg_rollback(conn);
        return rc;
    }
    if ((uint64_t)current != mine) {
        char why[128];
        pf_pg_rollback(conn);
        snprintf(why, sizeof(why), "epoch %lld in the database is not mine (%llu)",
                 (long long)current, (unsigned long long)mine);
        pf_sched_step_down(s, why);
        return pf_error_set(err, PF_E_ABORTED, "leadership lost: %s", why);
    }
    return PF_OK;
}

enum pf_status pf_sched_tx_commit(struct pf_sched *s, struct pf_pg_conn *conn, struct pf_error *err)
{
    enum pf_status rc = pf_pg_commit(conn, err);
    if (rc == PF_OK && tx_last_seq != 0)
        pf_sched_events_published(s, tx_last_seq);
    tx_last_seq = 0;
    return rc;
}

enum pf_status pf_sched_event_add(struct pf_pg_conn *conn, const struct pf_sched_event *ev,
                                  uint64_t *seq, struct pf_error *err)
{
    char kind[16], js[16], ps[16], as[16];
    const char *params[8];
    int64_t got;
    enum pf_status rc;

    snprintf(kind, sizeof(kind), "%d", (int)ev->kind);
    snprintf(js, sizeof(js), "%d", (int)ev->job_state);
    snprintf(ps, sizeof(ps), "%d", (int)ev->printer_state);
    snprintf(as, sizeof(as), "%d", (int)ev->attempt_state);
    params[0] = kind;
    params[1] = ev->job_id != NULL ? ev->job_id : "";
    params[2] = ev->printer_id != NULL ? ev->printer_id : "";
    params[3] = ev->attempt_id != NULL ? ev->attempt_id : "";
    params[4] = js;
    params[5] = ps;
    params[6] = as;
    params[7] = ev->text != NULL ? ev->text : "";
    rc = pf_pg_exec_int64(conn,
                          "WITH s AS (UPDATE event_seq SET last = last + 1 WHERE id = 1 "
                          "RETURNING last) "
                          "INSERT INTO events (seq, kind, job_id, printer_id, attempt_id, "
                          "job_state, printer_state, attempt_state, text) "
                          "SELECT s.last, $1::int, $2, $3, $4, $5::int, $6::int, $7::int, $8 "
                          "FROM s RETURNING seq",
                          8, params, &got, err);
    if (rc != PF_OK)
        return rc;
    if ((uint64_t)got > tx_last_seq)
        tx_last_seq = (uint64_t)got;
    if (seq != NULL)
        *seq = (uint64_t)got;
    return PF_OK;
}

void pf_sched_new_id(const char *prefix, char *out)
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; /* Crockford */
    uint8_t rnd[10];
    uint64_t ms = (uint64_t)pf_time_wall_ms();
    char text[27];

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        /* Not expected on Linux; fall back to time-mixed bits. */
        uint64_t x = ms ^ (uint64_t)pf_time_mono_ms() * 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < sizeof(rnd); i++, x = x * 6364136223846793005ull + 1)
            rnd[i] = (uint8_t)(x >> 56);
    }
    /* 10 characters of time (48 bits, most significant first)... */
    for (int i = 9; i >= 0; i--) {
        text[i] = alphabet[ms & 31];
        ms >>= 5;
    }
    /* ...and 16 of randomness (80 bits). */
    for (int i = 0; i < 16; i++) {
        int bit = i * 5;
        unsigned v = (unsigned)((rnd[bit / 8] << 8 | (bit / 8 + 1 < 10 ? rnd[bit / 8 + 1] : 0)) >>
                                (11 - bit % 8)) &
                     31;
        text[10 + i] = alphabet[v];
    }
    text[26] = '\0';
    snprintf(out, PF_SCHED_ID_MAX, "%s%s", prefix, text);
}

enum pf_status pf_sched_with_db(struct pf_sched *s, pf_sched_db_fn fn, void *arg,
                                struct pf_error *err)
{
    struct pf_pg_conn *conn;
    enum pf_status rc = pf_pg_pool_checkout(s->pool, DB_WAIT_MS, &conn, err);
    if (rc != PF_OK)
        return rc;
    rc = fn(s, conn, arg, err);
    pf_pg_pool_checkin(s->pool, conn);
    return rc;
}
