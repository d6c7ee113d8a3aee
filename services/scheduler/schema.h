/* The scheduler's PostgreSQL schema as numbered migrations, applied at
 * start-up by pf_pg_migrate under an advisory lock. */
#ifndef PF_SCHED_SCHEMA_H
#define PF_SCHED_SCHEMA_H

#include "pg.h"

extern const struct pf_pg_migration pf_sched_migrations[];
extern const size_t pf_sched_migration_count;

#endif
