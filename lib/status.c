/* Status codes and error detail: the formatting behind pf_error_set and the
 * stable lower-case names of each status used in logs and metric labels. The
 * names follow gRPC's canonical code names so a log line and the status a client
 * sees read the same. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[PF_STATUS_COUNT] = {
    [PF_OK] = "ok",
    [PF_E_INVALID] = "invalid_argument",
    [PF_E_NOT_FOUND] = "not_found",
    [PF_E_EXISTS] = "already_exists",
    [PF_E_PERMISSION] = "permission_denied",
    [PF_E_UNAUTHENTICATED] = "unauthenticated",
    [PF_E_PRECONDITION] = "failed_precondition",
    [PF_E_ABORTED] = "aborted",
    [PF_E_OUT_OF_RANGE] = "out_of_range",
    [PF_E_RESOURCE] = "resource_exhausted",
    [PF_E_UNAVAILABLE] = "unavailable",
    [PF_E_DATA_LOSS] = "data_loss",
    [PF_E_DEADLINE] = "deadline_exceeded",
    [PF_E_CANCELLED] = "cancelled",
    [PF_E_UNIMPLEMENTED] = "unimplemented",
    [PF_E_IO] = "io_error",
    [PF_E_INTERNAL] = "internal",
    [PF_E_END] = "end",
};

enum pf_status pf_error_set(struct pf_error *err, enum pf_status code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    /* Format into a scratch copy first: an argument may be err->msg itself. */
    char msg[PF_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    err->code = code;
    memcpy(err->msg, msg, sizeof msg);
    return code;
}

void pf_error_clear(struct pf_error *err)
{
    if (err == NULL)
        return;
    err->code = PF_OK;
    err->msg[0] = '\0';
}

const char *pf_status_name(enum pf_status code)
{
    if ((int)code < 0 || code >= PF_STATUS_COUNT || status_names[code] == NULL)
        return "unknown";
    return status_names[code];
}
