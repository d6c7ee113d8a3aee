/* A fixed pool of worker threads fed from one FIFO queue guarded by a mutex and
 * a condition variable. It exists so blocking calls (disk, libpq, hiredis) never
 * run on the gRPC completion-queue thread. Shutdown is orderly: destroy refuses
 * new jobs, lets the workers run everything already queued, then joins them.
 * Workers block the asynchronous process signals so that signal handling stays
 * with the thread that owns it (usually main). */
#include "workq.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct job {
    pf_work_fn fn;
    void *arg;
    struct job *next;
};

struct pf_workq {
    pthread_mutex_t lock;
    pthread_cond_t job_ready; /* signalled on submit and on shutdown */
    struct job *head, *tail;
    size_t queued;
    size_t max_queued;
    bool stopping;
    int thread_count;
    pthread_t *threads;
};

static void *worker_main(void *arg)
{
    struct pf_workq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (q->head == NULL && !q->stopping)
            pthread_cond_wait(&q->job_ready, &q->lock);
        struct job *job = q->head;
        if (job == NULL)
            break; /* stopping and drained */
        q->head = job->next;
        if (q->head == NULL)
            q->tail = NULL;
        q->queued--;
        pthread_mutex_unlock(&q->lock);
        job->fn(job->arg);
        free(job);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* Wakes the workers, waits for the first `started` of them and frees q. */
static void stop_and_free(struct pf_workq *q, int started)
{
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->job_ready);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < started; i++)
        pthread_join(q->threads[i], NULL);
    /* Jobs can remain only when no worker ever started. */
    while (q->head != NULL) {
        struct job *job = q->head;
        q->head = job->next;
        free(job);
    }
    pthread_cond_destroy(&q->job_ready);
    pthread_mutex_destroy(&q->lock);
    free(q->threads);
    free(q);
}

struct pf_workq *pf_workq_create(int threads, size_t max_queued)
{
    if (threads < 1)
        return NULL;
    struct pf_workq *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->threads = calloc((size_t)threads, sizeof *q->threads);
    if (q->threads == NULL)
        goto out_free_queue;
    if (pthread_mutex_init(&q->lock, NULL) != 0)
        goto out_free_threads;
    if (pthread_cond_init(&q->job_ready, NULL) != 0)
        goto out_destroy_lock;
    q->max_queued = max_queued;

    sigset_t blocked, saved;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGHUP);
    sigaddset(&blocked, SIGQUIT);
    sigaddset(&blocked, SIGUSR1);
    sigaddset(&blocked, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &blocked, &saved);
    int started = 0;
    for (; started < threads; started++) {
        if (pthread_create(&q->threads[started], NULL, worker_main, q) != 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (started < threads) {
        stop_and_free(q, started);
        return NULL;
    }
    q->thread_count = threads;
    return q;

out_destroy_lock:
    pthread_mutex_destroy(&q->lock);
out_free_threads:
    free(q->threads);
out_free_queue:
    free(q);
    return NULL;
}

enum pf_status pf_workq_submit(struct pf_workq *q, pf_work_fn fn, void *arg)
{
    if (q == NULL || fn == NULL)
        return PF_E_INVALID;
    struct job *job = malloc(sizeof *job);
    if (job == NULL)
        return PF_E_RESOURCE;
    job->fn = fn;
    job->arg = arg;
    job->next = NULL;

    enum pf_status st = PF_OK;
    pthread_mutex_lock(&q->lock);
    if (q->stopping) {
        st = PF_E_UNAVAILABLE;
        goto out_unlock;
    }
    if (q->max_queued != 0 && q->queued >= q->max_queued) {
        st = PF_E_RESOURCE;
        goto out_unlock;
    }
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
    q->queued++;
    job = NULL;
    pthread_cond_signal(&q->job_ready);
out_unlock:
    pthread_mutex_unlock(&q->lock);
    free(job); /* only when it was not queued */
    return st;
}

void pf_workq_destroy(struct pf_workq *q)
{
    if (q == NULL)
        return;
    stop_and_free(q, q->thread_count);
}
