/* Status codes and error detail shared by every module: fallible actions return
 * enum pf_status (PF_OK == 0) and fill a struct pf_error with a message a person
 * can act on. lib/rpc maps these codes to gRPC status codes in one place. */
#ifndef PF_STATUS_H
#define PF_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#define PF_MUST_CHECK   __attribute__((warn_unused_result))
#define PF_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum pf_status {
    PF_OK = 0,
    PF_E_INVALID,         /* bad input from the caller: INVALID_ARGUMENT */
    PF_E_NOT_FOUND,       /* NOT_FOUND */
    PF_E_EXISTS,          /* ALREADY_EXISTS */
    PF_E_PERMISSION,      /* PERMISSION_DENIED */
    PF_E_UNAUTHENTICATED, /* UNAUTHENTICATED */
    PF_E_PRECONDITION,    /* FAILED_PRECONDITION */
    PF_E_ABORTED,         /* ABORTED: a conflict, retry may succeed */
    PF_E_OUT_OF_RANGE,    /* OUT_OF_RANGE */
    PF_E_RESOURCE,        /* RESOURCE_EXHAUSTED: a limit was hit */
    PF_E_UNAVAILABLE,     /* UNAVAILABLE: a dependency is down, retry later */
    PF_E_DATA_LOSS,       /* DATA_LOSS: stored bytes no longer match */
    PF_E_DEADLINE,        /* DEADLINE_EXCEEDED */
    PF_E_CANCELLED,       /* CANCELLED */
    PF_E_UNIMPLEMENTED,   /* UNIMPLEMENTED */
    PF_E_IO,              /* a local I/O failure: INTERNAL */
    PF_E_INTERNAL,        /* a bug or an impossible state: INTERNAL */
    PF_E_END,             /* end of a stream: not an error for readers */
    PF_STATUS_COUNT
};

#define PF_ERROR_MSG_MAX 256

/* The detail of a failure. Embedded by value; no ownership to manage. */
struct pf_error {
    enum pf_status code;
    char msg[PF_ERROR_MSG_MAX];
};

/* Sets err (if not NULL) to code and a printf-formatted message; returns code so
 * callers can write `return pf_error_set(err, PF_E_INVALID, "...")`. */
enum pf_status pf_error_set(struct pf_error *err, enum pf_status code, const char *fmt, ...)
    PF_PRINTF(3, 4);

/* Clears err to PF_OK with an empty message. */
void pf_error_clear(struct pf_error *err);

/* A stable lower-case name for a status ("invalid_argument", ...), for logs and metrics. */
const char *pf_status_name(enum pf_status code);

#endif
