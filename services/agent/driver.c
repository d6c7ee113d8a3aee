/* Names shared by every printer driver (see driver.h). */
#include "driver.h"

const char *pf_driver_state_name(enum pf_driver_state s)
{
    switch (s) {
    case PF_DRIVER_DISCONNECTED:
        return "disconnected";
    case PF_DRIVER_IDLE:
        return "idle";
    case PF_DRIVER_HEATING:
        return "heating";
    case PF_DRIVER_PRINTING:
        return "printing";
    case PF_DRIVER_PAUSED:
        return "paused";
    case PF_DRIVER_CANCELLING:
        return "cancelling";
    case PF_DRIVER_CLEARING:
        return "clearing";
    case PF_DRIVER_ERROR:
        return "error";
    }
    return "unknown";
}

const char *pf_driver_result_name(enum pf_driver_result r)
{
    switch (r) {
    case PF_DRIVER_RESULT_NONE:
        return "none";
    case PF_DRIVER_RESULT_SUCCEEDED:
        return "succeeded";
    case PF_DRIVER_RESULT_FAILED:
        return "failed";
    case PF_DRIVER_RESULT_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}
