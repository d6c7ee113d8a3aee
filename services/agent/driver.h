/* The printer driver interface of pf-agent: a table of function pointers that
 * every backend fills (curl vtls style), one file each — driver_sim.c (a
 * simulated printer) and driver_marlin.c (G-code over a serial port). A
 * session drives one struct pf_driver: it starts prints from a verified local
 * file, cancels, pauses, resumes, runs the clearing script, and polls the
 * status; the driver never talks to the scheduler. Ends of prints are seen
 * through poll (the job's result), so a driver needs no callbacks.
 *
 * Thread-safety: every op may be called from any thread; a driver serialises
 * them itself. Ops never block for long (a serial port is fed by the driver's
 * own thread). */
#ifndef PF_AGENT_DRIVER_H
#define PF_AGENT_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include "status.h"

#define PF_DRIVER_ID_MAX    128
#define PF_DRIVER_TEXT_MAX  256
#define PF_DRIVER_TEMPS_MAX 8

enum pf_driver_state {
    PF_DRIVER_DISCONNECTED, /* no link to the printer (yet): connect */
    PF_DRIVER_IDLE,         /* ready; job holds the last print's result, if any */
    PF_DRIVER_HEATING,      /* a print started and is waiting for temperatures */
    PF_DRIVER_PRINTING,
    PF_DRIVER_PAUSED,
    PF_DRIVER_CANCELLING, /* stopping a print; becomes IDLE with result CANCELLED */
    PF_DRIVER_CLEARING,   /* running the bed-clearing script */
    PF_DRIVER_ERROR,      /* a fault (error says which); a print running ended FAILED */
};

enum pf_driver_result {
    PF_DRIVER_RESULT_NONE, /* no print yet, or it is still running */
    PF_DRIVER_RESULT_SUCCEEDED,
    PF_DRIVER_RESULT_FAILED,
    PF_DRIVER_RESULT_CANCELLED,
};

/* What a print is: borrowed by start for the call; the driver copies it. */
struct pf_driver_job {
    const char *attempt_id; /* the scheduler's attempt: the driver's tag for the print */
    const char *job_id;
    const char *path;           /* the verified gcode file in the cache */
    uint64_t size;              /* its size in bytes */
    uint32_t estimated_seconds; /* from the scheduler's metadata; 0 = unknown */
};

struct pf_driver_temp {
    char sensor[16]; /* "T0", "bed", "chamber" */
    double actual;
    double target; /* 0 = heater off */
};

/* A snapshot, filled by poll. */
struct pf_driver_status {
    enum pf_driver_state state;
    char error[PF_DRIVER_TEXT_MAX]; /* why DISCONNECTED or ERROR, for people */
    /* The print running, or the last one that ended (attempt_id "" = none). */
    char attempt_id[PF_DRIVER_ID_MAX];
    enum pf_driver_result result;    /* NONE while it runs */
    char reason[PF_DRIVER_TEXT_MAX]; /* why it failed or was cancelled */
    float progress;                  /* 0..1 */
    uint32_t elapsed_seconds;
    uint32_t remaining_seconds; /* 0 = unknown */
    /* Bed clearing: each finished run increments clearings; clearing_ok and
     * clearing_error describe the last one. */
    uint32_t clearings;
    bool clearing_ok;
    char clearing_error[PF_DRIVER_TEXT_MAX];
    size_t temp_count;
    struct pf_driver_temp temps[PF_DRIVER_TEMPS_MAX];
    uint64_t serial_resends; /* lines the firmware asked again, since creation */
};

/* What the printer can do (AgentCapabilities), known after connect. */
struct pf_driver_caps {
    char firmware[PF_DRIVER_TEXT_MAX];
    uint32_t extruders;
    bool can_pause;
    bool auto_clear; /* a clearing script is configured */
    double bed_x_mm, bed_y_mm, bed_z_mm;
};

struct pf_driver;

struct pf_driver_ops {
    const char *name; /* "sim", "marlin" */
    /* Opens the link to the printer. PF_OK when connected (or connecting in
     * the background: poll says when); an error for a link that cannot be
     * made now (the session retries with backoff). */
    enum pf_status (*connect)(struct pf_driver *d, struct pf_error *err);
    /* Starts job. PF_E_PRECONDITION unless IDLE; PF_E_NOT_FOUND/PF_E_IO for
     * a file that cannot be read. On PF_OK poll reports job->attempt_id. */
    enum pf_status (*start)(struct pf_driver *d, const struct pf_driver_job *job,
                            struct pf_error *err);
    /* Stops the running print; poll then ends it with CANCELLED.
     * PF_E_PRECONDITION when nothing runs. */
    enum pf_status (*cancel)(struct pf_driver *d, struct pf_error *err);
    enum pf_status (*pause)(struct pf_driver *d, struct pf_error *err);
    enum pf_status (*resume)(struct pf_driver *d, struct pf_error *err);
    /* Runs the bed-clearing script. PF_E_UNIMPLEMENTED without one,
     * PF_E_PRECONDITION unless IDLE. */
    enum pf_status (*run_clearing)(struct pf_driver *d, struct pf_error *err);
    /* Fills *out; never fails. */
    void (*poll)(struct pf_driver *d, struct pf_driver_status *out);
    void (*caps)(struct pf_driver *d, struct pf_driver_caps *out);
    /* Stops the driver's thread (a running print is left to the printer) and
     * frees d. */
    void (*destroy)(struct pf_driver *d);
};

/* Every implementation embeds this as its first member. */
struct pf_driver {
    const struct pf_driver_ops *ops;
};

/* Wrappers, so callers read d->ops less. */
static inline enum pf_status pf_driver_connect(struct pf_driver *d, struct pf_error *err)
{
    return d->ops->connect(d, err);
}
static inline enum pf_status pf_driver_start(struct pf_driver *d, const struct pf_driver_job *job,
                                             struct pf_error *err)
{
    return d->ops->start(d, job, err);
}
static inline enum pf_status pf_driver_cancel(struct pf_driver *d, struct pf_error *err)
{
    return d->ops->cancel(d, err);
}
static inline enum pf_status pf_driver_pause(struct pf_driver *d, struct pf_error *err)
{
    return d->ops->pause(d, err);
}
static inline enum pf_status pf_driver_resume(struct pf_driver *d, struct pf_error *err)
{
    return d->ops->resume(d, err);
}
static inline enum pf_status pf_driver_run_clearing(struct pf_driver *d, struct pf_error *err)
{
    return d->ops->run_clearing(d, err);
}
static inline void pf_driver_poll(struct pf_driver *d, struct pf_driver_status *out)
{
    d->ops->poll(d, out);
}
static inline void pf_driver_caps(struct pf_driver *d, struct pf_driver_caps *out)
{
    d->ops->caps(d, out);
}
static inline void pf_driver_destroy(struct pf_driver *d)
{
    if (d != NULL)
        d->ops->destroy(d);
}

/* A stable lower-case name of a state ("printing"), for logs and metrics. */
const char *pf_driver_state_name(enum pf_driver_state s);
const char *pf_driver_result_name(enum pf_driver_result r);

/* ---- the sim driver (driver_sim.c) ---- */

enum pf_sim_fault {
    PF_SIM_FAULT_NONE,
    PF_SIM_FAULT_DISCONNECT,   /* the printer's link drops mid-print */
    PF_SIM_FAULT_THERMAL,      /* thermal runaway mid-print */
    PF_SIM_FAULT_NEVER_FINISH, /* progress stops short of the end */
};

struct pf_sim_config {
    const char *printer_id;  /* for the log line */
    double speed;            /* print time = estimate × speed (0.001 for tests) */
    double heat_seconds;     /* heating before each print, wall seconds */
    double fail_at;          /* percent at which a print fails; < 0 = never */
    enum pf_sim_fault fault; /* happens at fail_at % (50 % when fail_at < 0) */
    double clear_seconds;    /* how long the clearing script runs */
    double recover_seconds;  /* an error or dropped link clears after this */
    uint32_t extruders;
    /* Where the simulated printer keeps its own memory (the print it runs
     * survives an agent restart like a printer printing from its SD card);
     * NULL = nothing kept. */
    const char *state_path;
    /* Every print that ends is appended as "attempt_id job_id printer_id
     * result\n" (one write(2), O_APPEND: shared by every printer of a
     * process); -1 = no log. Borrowed: outlives the driver. */
    int log_fd;
};

/* Parses "none", "disconnect", "thermal", "never-finish". */
enum pf_status pf_sim_fault_parse(const char *text, enum pf_sim_fault *out) PF_MUST_CHECK;

/* Creates a simulated printer (config copied). On PF_OK *out is owned by the
 * caller (pf_driver_destroy). PF_E_DATA_LOSS when state_path holds a corrupt
 * file. */
enum pf_status pf_driver_sim_create(const struct pf_sim_config *cfg, struct pf_driver **out,
                                    struct pf_error *err) PF_MUST_CHECK;

/* ---- the marlin driver (driver_marlin.c) ---- */

struct pf_marlin_driver_config {
    const char *port; /* "/dev/ttyACM0" */
    unsigned baud;    /* 115200, 250000, ... */
    unsigned window;  /* lines in flight (1 = the safe default) */
    int64_t reply_timeout_ms;
    const char *clearing_gcode_path; /* gcode file that clears the bed; NULL = none */
    uint32_t extruders;
    double bed_x_mm, bed_y_mm, bed_z_mm;
};

/* Creates the driver (config copied); the port is opened by connect. */
enum pf_status pf_driver_marlin_create(const struct pf_marlin_driver_config *cfg,
                                       struct pf_driver **out, struct pf_error *err) PF_MUST_CHECK;

#endif
