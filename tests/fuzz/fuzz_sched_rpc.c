/* Fuzz target: pf-scheduler request handling. Byte 0 picks the RPC, the rest
 * is its serialized request; the target decodes it with protobuf-c and runs
 * the checks api.c runs on the completion-queue thread before any work is
 * queued (services/scheduler/validate.c), including the page-token decode of
 * ListJobs and ListPrinters with the filter api.c computes. For Connect, the
 * bytes are one AgentMessage and a Hello's printer_id and profile go through
 * pf_sched_check_printer_id and pf_sched_check_profile_name, the rules
 * agents.c applies to them. For WatchEvents, pf_sched_check_watch_events, as
 * events.c runs it.
 *
 * Oracles: a refused request is PF_E_INVALID with a message; an accepted
 * SubmitJob yields a storable job name; page tokens round-trip for the
 * request's filter and are refused for another; printer ids and profiles
 * accepted are exactly 1..64 characters of [A-Za-z0-9._-] (checked here
 * character by character, not with validate.c's own helper); an accepted
 * WatchEvents request has filters of at most 127 bytes, at most 64 kinds, and
 * a kinds mask with exactly the bits of the kinds it lists. */
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "rpc/pb.h"
#include "validate.h"

enum rpc {
    SUBMIT_JOB,
    GET_JOB,
    LIST_JOBS,
    UPDATE_JOB,
    CANCEL_JOB,
    LIST_PRINTERS,
    UPDATE_PRINTER,
    CONFIRM_BED_CLEAR,
    CONNECT,
    WATCH_EVENTS,
    RPC_COUNT
};

static const ProtobufCMessageDescriptor *const descriptors[RPC_COUNT] = {
    [SUBMIT_JOB] = &printfarm__v1__submit_job_request__descriptor,
    [GET_JOB] = &printfarm__v1__get_job_request__descriptor,
    [LIST_JOBS] = &printfarm__v1__list_jobs_request__descriptor,
    [UPDATE_JOB] = &printfarm__v1__update_job_request__descriptor,
    [CANCEL_JOB] = &printfarm__v1__cancel_job_request__descriptor,
    [LIST_PRINTERS] = &printfarm__v1__list_printers_request__descriptor,
    [UPDATE_PRINTER] = &printfarm__v1__update_printer_request__descriptor,
    [CONFIRM_BED_CLEAR] = &printfarm__v1__confirm_bed_clear_request__descriptor,
    [CONNECT] = &printfarm__v1__agent_message__descriptor,
    [WATCH_EVENTS] = &printfarm__v1__watch_events_request__descriptor,
};

/* What api.c does with a listing's page token, then a round trip of a token
 * for this filter keyed by bytes of the request. */
static enum pf_status page_token(const char *kind, const char *queue, const int *states,
                                 size_t n_states, const char *token, const char *id_seed,
                                 struct pf_error *err)
{
    uint64_t filter = pf_sched_page_filter(kind, queue, pf_sched_state_mask(states, n_states));
    struct pf_sched_page_key key, back;
    char text[PF_SCHED_PAGE_TOKEN_MAX];

    if (token != NULL && token[0] != '\0') {
        if (pf_sched_page_token_decode(token, filter, &key, err) != PF_OK)
            return err->code;
        /* An accepted token names exactly what it was issued for. */
        pf_sched_page_token_encode(filter, &key, text);
        FUZZ_CHECK(strcasecmp(text, token) == 0);
    }
    memset(&key, 0, sizeof(key));
    key.time_us = (int64_t)filter;
    snprintf(key.id, sizeof(key.id), "%s", id_seed != NULL ? id_seed : "");
    pf_sched_page_token_encode(filter, &key, text);
    FUZZ_CHECK(strlen(text) < PF_SCHED_PAGE_TOKEN_MAX);
    struct pf_error e;
    FUZZ_CHECK(pf_sched_page_token_decode(text, filter, &back, &e) == PF_OK);
    FUZZ_CHECK(back.time_us == key.time_us && strcmp(back.id, key.id) == 0);
    FUZZ_CHECK(pf_sched_page_token_decode(text, filter ^ 1, &back, &e) == PF_E_INVALID);
    return PF_OK;
}

/* The documented rule, spelled out independently of validate.c. */
static bool printer_id_rule(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    if (n == 0 || n > PF_SCHED_PRINTER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static enum pf_status connect_message(const Printfarm__V1__AgentMessage *m, struct pf_error *err)
{
    if (m->msg_case != PRINTFARM__V1__AGENT_MESSAGE__MSG_HELLO)
        return pf_error_set(err, PF_E_INVALID, "the first message on Connect must be a hello");
    const Printfarm__V1__AgentHello *h = m->hello;
    enum pf_status id_rc = pf_sched_check_printer_id(h->printer_id, "hello.printer_id", err);
    FUZZ_CHECK((id_rc == PF_OK) == printer_id_rule(h->printer_id));
    if (id_rc != PF_OK)
        return id_rc;
    enum pf_status profile_rc = pf_sched_check_profile_name(h->profile, "hello.profile", err);
    FUZZ_CHECK((profile_rc == PF_OK) == printer_id_rule(h->profile));
    return profile_rc;
}

static enum pf_status watch_events(const Printfarm__V1__WatchEventsRequest *r, struct pf_error *err)
{
    uint64_t kinds = UINT64_C(0xfeedface);
    if (pf_sched_check_watch_events(r, &kinds, err) != PF_OK) {
        FUZZ_CHECK(kinds == UINT64_C(0xfeedface)); /* untouched on error */
        return err->code;
    }
    FUZZ_CHECK(strlen(r->job_id) <= 127 && strlen(r->printer_id) <= 127);
    FUZZ_CHECK(r->n_kinds <= 64);
    uint64_t expect = 0;
    for (size_t i = 0; i < r->n_kinds; i++) {
        int k = (int)r->kinds[i];
        FUZZ_CHECK(k > 0 && k < 64 && pf_sched_event_kind_known(k));
        expect |= (uint64_t)1 << k;
    }
    FUZZ_CHECK(kinds == expect);
    FUZZ_CHECK((kinds & 1) == 0); /* UNSPECIFIED never passes */
    return PF_OK;
}

static enum pf_status check(enum rpc rpc, const ProtobufCMessage *msg, struct pf_error *err)
{
    switch (rpc) {
    case SUBMIT_JOB: {
        const Printfarm__V1__SubmitJobRequest *r = (const void *)msg;
        char name[PF_SCHED_JOB_NAME_MAX + 1];
        if (pf_sched_check_submit(r, err) != PF_OK)
            return err->code;
        pf_sched_job_name(r->name, r->name, r->bundle->sha256, name);
        FUZZ_CHECK(name[0] != '\0' && strlen(name) <= PF_SCHED_JOB_NAME_MAX);
        FUZZ_CHECK(pf_sched_text_printable(name));
        /* Against a bundle without files: only profiles make it refuse. */
        struct pf_error e;
        enum pf_status rc = pf_sched_check_profiles_in_bundle(r->constraints, NULL, &e);
        FUZZ_CHECK(rc == PF_OK || rc == PF_E_INVALID);
        FUZZ_CHECK((rc == PF_OK) == (r->constraints == NULL || r->constraints->n_profiles == 0));
        return PF_OK;
    }
    case GET_JOB:
        return pf_sched_check_get_job((const void *)msg, err);
    case LIST_JOBS: {
        const Printfarm__V1__ListJobsRequest *r = (const void *)msg;
        if (pf_sched_check_list_jobs(r, err) != PF_OK)
            return err->code;
        return page_token("jobs", r->queue, (const int *)r->states, r->n_states, r->page_token,
                          r->queue, err);
    }
    case UPDATE_JOB:
        return pf_sched_check_update_job((const void *)msg, err);
    case CANCEL_JOB:
        return pf_sched_check_cancel_job((const void *)msg, err);
    case LIST_PRINTERS: {
        const Printfarm__V1__ListPrintersRequest *r = (const void *)msg;
        if (pf_sched_check_list_printers(r, err) != PF_OK)
            return err->code;
        return page_token("printers", r->queue, (const int *)r->states, r->n_states, r->page_token,
                          r->page_token, err);
    }
    case UPDATE_PRINTER:
        return pf_sched_check_update_printer((const void *)msg, err);
    case CONFIRM_BED_CLEAR:
        return pf_sched_check_confirm_bed_clear((const void *)msg, err);
    case WATCH_EVENTS:
        return watch_events((const void *)msg, err);
    default:
        return connect_message((const void *)msg, err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ProtobufCMessage *msg;
    struct pf_error err;

    if (size == 0)
        return 0;
    enum rpc rpc = (enum rpc)(data[0] % RPC_COUNT);
    if (pf_pb_unpack(descriptors[rpc], data + 1, size - 1, &msg, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID);
        return 0;
    }
    pf_error_clear(&err);
    if (check(rpc, msg, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID);
        FUZZ_CHECK(err.msg[0] != '\0' && strlen(err.msg) < sizeof(err.msg));
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
