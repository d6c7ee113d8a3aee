/* Unit tests for lib/workq.c: every job runs, FIFO order on one thread, real
 * parallelism on several, the queue bound (PF_E_RESOURCE), refusal after
 * shutdown began (PF_E_UNAVAILABLE), destroy draining what is queued, and bad
 * arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <cmocka.h>

#include "timeutil.h"
#include "workq.h"

static atomic_int counter;

static void count_job(void *arg)
{
    (void)arg;
    pf_time_sleep_ms(1);
    atomic_fetch_add(&counter, 1);
}

static void test_bad_arguments(void **state)
{
    assert_null(pf_workq_create(0, 0));
    assert_null(pf_workq_create(-3, 10));
    struct pf_workq *q = pf_workq_create(1, 0);
    assert_non_null(q);
    assert_int_equal(pf_workq_submit(q, NULL, NULL), PF_E_INVALID);
    assert_int_equal(pf_workq_submit(NULL, count_job, NULL), PF_E_INVALID);
    pf_workq_destroy(q);
    pf_workq_destroy(NULL);
}

static void test_destroy_drains_queue(void **state)
{
    atomic_store(&counter, 0);
    struct pf_workq *q = pf_workq_create(3, 0);
    assert_non_null(q);
    for (int i = 0; i < 200; i++)
        assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_OK);
    pf_workq_destroy(q); /* returns only after all 200 ran */
    assert_int_equal(atomic_load(&counter), 200);
}

struct order {
    pthread_mutex_t lock;
    int seen[100];
    int count;
};

struct order_job {
    struct order *order;
    int n;
};

static void record_job(void *arg)
{
    struct order_job *job = arg;
    pthread_mutex_lock(&job->order->lock);
    job->order->seen[job->order->count++] = job->n;
    pthread_mutex_unlock(&job->order->lock);
}

static void test_fifo_on_one_thread(void **state)
{
    struct order order = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct order_job jobs[100];
    struct pf_workq *q = pf_workq_create(1, 0);
    assert_non_null(q);
    for (int i = 0; i < 100; i++) {
        jobs[i] = (struct order_job){&order, i};
        assert_int_equal(pf_workq_submit(q, record_job, &jobs[i]), PF_OK);
    }
    pf_workq_destroy(q);
    assert_int_equal(order.count, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(order.seen[i], i);
}

static pthread_barrier_t barrier;

static void barrier_job(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&barrier);
}

static void test_threads_run_in_parallel(void **state)
{
    /* four jobs that each wait for the other three (and the test) can only
     * finish if four workers run them at once */
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 5), 0);
    struct pf_workq *q = pf_workq_create(4, 0);
    assert_non_null(q);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pf_workq_submit(q, barrier_job, NULL), PF_OK);
    pthread_barrier_wait(&barrier);
    pf_workq_destroy(q);
    pthread_barrier_destroy(&barrier);
}

/* A job that holds its worker until the test opens the gate. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered;
    bool open;
};

static void gate_job(void *arg)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void test_queue_bound(void **state)
{
    atomic_store(&counter, 0);
    struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
    struct pf_workq *q = pf_workq_create(1, 2);
    assert_non_null(q);
    assert_int_equal(pf_workq_submit(q, gate_job, &g), PF_OK);
    gate_wait_entered(&g); /* the worker is busy; the queue is empty */
    assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_OK);
    assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_OK);
    assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_E_RESOURCE);
    assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_E_RESOURCE);
    gate_open(&g);
    pf_workq_destroy(q);
    /* refused jobs never ran */
    assert_int_equal(atomic_load(&counter), 2);
}

struct late_submit {
    struct pf_workq *q;
    struct gate gate;
    atomic_int result;
};

static void late_submit_job(void *arg)
{
    struct late_submit *ls = arg;
    gate_job(&ls->gate); /* the gate opens only once shutdown has begun */
    atomic_store(&ls->result, pf_workq_submit(ls->q, count_job, NULL));
}

static void *destroy_thread(void *arg)
{
    pf_workq_destroy(arg);
    return NULL;
}

static void test_submit_after_shutdown_refused(void **state)
{
    atomic_store(&counter, 0);
    struct late_submit ls = {.gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER}};
    atomic_store(&ls.result, -1);
    ls.q = pf_workq_create(1, 0);
    assert_non_null(ls.q);
    assert_int_equal(pf_workq_submit(ls.q, late_submit_job, &ls), PF_OK);
    assert_int_equal(pf_workq_submit(ls.q, count_job, NULL), PF_OK);
    gate_wait_entered(&ls.gate);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, destroy_thread, ls.q), 0);
    /* The pool cannot be freed while the gate holds its only worker, so keep
     * submitting until destroy has marked it as stopping. */
    int accepted = 0;
    for (;;) {
        enum pf_status st = pf_workq_submit(ls.q, count_job, NULL);
        if (st == PF_E_UNAVAILABLE)
            break;
        assert_int_equal(st, PF_OK);
        accepted++;
        pf_time_sleep_ms(1);
    }
    gate_open(&ls.gate);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&ls.result), PF_E_UNAVAILABLE);
    /* every job queued before shutdown still ran */
    assert_int_equal(atomic_load(&counter), 1 + accepted);
}

static void test_many_threads_many_jobs(void **state)
{
    atomic_store(&counter, 0);
    struct pf_workq *q = pf_workq_create(8, 1000);
    assert_non_null(q);
    for (int i = 0; i < 500; i++)
        assert_int_equal(pf_workq_submit(q, count_job, NULL), PF_OK);
    pf_workq_destroy(q);
    assert_int_equal(atomic_load(&counter), 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_destroy_drains_queue),
        cmocka_unit_test(test_fifo_on_one_thread),
        cmocka_unit_test(test_threads_run_in_parallel),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_submit_after_shutdown_refused),
        cmocka_unit_test(test_many_threads_many_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
