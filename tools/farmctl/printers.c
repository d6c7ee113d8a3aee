/* farmctl printers / printer show|clear|materials|release: the printers as
 * ListPrinters shows them, ConfirmBedClear and UpdatePrinter. */
#include <stdlib.h>
#include <string.h>

#include "farmctl.h"
#include "printfarm/v1/scheduler.pb-c.h"

#define STATES_MAX    8
#define EXTRUDERS_MAX 64

int fc_list_printers(struct fc_ctx *ctx, const char *queue, const int *states, size_t n_states,
                     struct fc_pages *out)
{
    char token[512] = "";
    memset(out, 0, sizeof(*out));
    for (;;) {
        Printfarm__V1__ListPrintersRequest req = PRINTFARM__V1__LIST_PRINTERS_REQUEST__INIT;
        req.queue = (char *)(queue ? queue : "");
        req.n_states = n_states;
        req.states = (Printfarm__V1__PrinterState *)states;
        req.page_size = 1000;
        req.page_token = token;
        Printfarm__V1__ListPrintersResponse *r = NULL;
        int rc = fc_sched_call(ctx, "/printfarm.v1.Scheduler/ListPrinters", &req.base,
                               &printfarm__v1__list_printers_response__descriptor,
                               (ProtobufCMessage **)&r);
        if (rc != FC_EXIT_OK) {
            fc_pages_release(out);
            return rc;
        }
        ProtobufCMessage **n = realloc(out->pages, (out->n + 1) * sizeof(*n));
        if (n == NULL) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            fc_pages_release(out);
            fc_err("out of memory");
            return FC_EXIT_FAILED;
        }
        out->pages = n;
        out->pages[out->n++] = &r->base;
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0' || r->n_printers == 0)
            return FC_EXIT_OK;
        snprintf(token, sizeof(token), "%s", r->next_page_token);
    }
}

static const char *printer_state(int s, char *b, size_t n)
{
    return fc_enum_name(&printfarm__v1__printer_state__descriptor, s, b, n);
}

static void materials_text(const Printfarm__V1__Printer *p, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->n_materials && len < size; i++) {
        const Printfarm__V1__ExtruderMaterial *m = p->materials[i];
        len += (size_t)snprintf(out + len, size - len, "%s%u=%s%s%s", i ? "," : "", m->extruder,
                                m->material, m->colour[0] ? ":" : "", m->colour);
    }
}

/* Finds one printer by id (there is no GetPrinter: ListPrinters pages). On
 * FC_EXIT_OK *found points into *pages (release them after use). */
static int find_printer(struct fc_ctx *ctx, const char *id, struct fc_pages *pages,
                        const Printfarm__V1__Printer **found)
{
    int rc = fc_list_printers(ctx, NULL, NULL, 0, pages);
    *found = NULL;
    if (rc != FC_EXIT_OK)
        return rc;
    for (size_t p = 0; p < pages->n && *found == NULL; p++) {
        const Printfarm__V1__ListPrintersResponse *r = (void *)pages->pages[p];
        for (size_t i = 0; i < r->n_printers; i++)
            if (strcmp(r->printers[i]->id, id) == 0)
                *found = r->printers[i];
    }
    if (*found == NULL) {
        fc_pages_release(pages);
        fc_err("no printer '%s' (farmctl printers lists them)", id);
        return FC_EXIT_FAILED;
    }
    return FC_EXIT_OK;
}

/* ---------------------------------------------------------------- printers */

struct list_opts {
    const char *queue;
    int states[STATES_MAX];
    size_t n_states;
};

enum { L_QUEUE = 1, L_STATE };

static const struct option list_options[] = {
    {"queue", required_argument, NULL, L_QUEUE},
    {"state", required_argument, NULL, L_STATE},
    {NULL, 0, NULL, 0},
};

static const struct fc_cmd cmd_printers = {
    "printers",
    "[--queue Q] [--state S[,S...]]",
    "Lists printers (connected or not), by id.\n"
    "  --queue Q        only printers serving this queue\n"
    "  --state S,...    only these states: offline, idle, printing, paused, awaiting_clear,\n"
    "                   error, quarantined\n",
    list_options,
};

static int list_opt(void *arg, int key, const char *v)
{
    struct list_opts *o = arg;
    if (key == L_QUEUE) {
        o->queue = v;
        return FC_EXIT_OK;
    }
    if (key != L_STATE)
        return FC_EXIT_USAGE;
    char *copy = strdup(v), *save = NULL;
    int rc = FC_EXIT_OK;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        int s;
        if (o->n_states == STATES_MAX ||
            !fc_enum_parse(&printfarm__v1__printer_state__descriptor, t, &s)) {
            rc = fc_usage(&cmd_printers,
                          "unknown state '%s' (states: offline, idle, printing, paused, "
                          "awaiting_clear, error, quarantined)",
                          t);
            break;
        }
        o->states[o->n_states++] = s;
    }
    free(copy);
    return rc;
}

int fc_cmd_printers(struct fc_ctx *ctx, int argc, char **argv)
{
    struct list_opts o = {0};
    struct fc_pages pages;
    int first, rc;
    if (!fc_parse(ctx, &cmd_printers, argc, argv, list_opt, &o, &first, &rc))
        return rc;
    if (first != argc)
        return fc_usage(&cmd_printers, "unexpected argument '%s'", argv[first]);
    if ((rc = fc_list_printers(ctx, o.queue, o.states, o.n_states, &pages)) != FC_EXIT_OK)
        return rc;
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "printers");
        fc_json_begin_array(&j);
        for (size_t p = 0; p < pages.n; p++) {
            const Printfarm__V1__ListPrintersResponse *r = (void *)pages.pages[p];
            for (size_t i = 0; i < r->n_printers; i++)
                fc_json_message(&j, &r->printers[i]->base);
        }
        fc_json_end_array(&j);
        fc_json_end_object(&j);
        rc = fc_json_print(&j, stdout);
    } else {
        static const char *const hdr[] = {"ID",  "PROFILE",  "STATE",  "MATERIALS",
                                          "JOB", "PROGRESS", "DRIVER", "LAST SEEN"};
        struct fc_table *t = fc_table_create(8, hdr);
        size_t n = 0;
        for (size_t p = 0; p < pages.n; p++) {
            const Printfarm__V1__ListPrintersResponse *r = (void *)pages.pages[p];
            for (size_t i = 0; i < r->n_printers; i++, n++) {
                const Printfarm__V1__Printer *pr = r->printers[i];
                char st[48], mats[256], prog[16] = "", seen[48];
                printer_state(pr->state, st, sizeof(st));
                if (pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_ERROR ||
                    pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_QUARANTINED)
                    if (pr->state_reason[0] != '\0')
                        snprintf(st + strlen(st), sizeof(st) - strlen(st), " (%.30s)",
                                 pr->state_reason);
                materials_text(pr, mats, sizeof(mats));
                if (pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING ||
                    pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED)
                    snprintf(prog, sizeof(prog), "%.0f%%", (double)pr->progress * 100);
                bool busy = pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PRINTING ||
                            pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_PAUSED ||
                            pr->state == PRINTFARM__V1__PRINTER_STATE__PRINTER_STATE_AWAITING_CLEAR;
                const char *row[] = {pr->id,
                                     pr->profile,
                                     st,
                                     mats,
                                     busy ? pr->current_job_id : "",
                                     prog,
                                     pr->capabilities ? pr->capabilities->driver : "",
                                     fc_fmt_age(pr->last_seen_unix_ms, seen, sizeof(seen))};
                fc_table_add(t, row);
            }
        }
        if (n == 0)
            printf("no printers%s (start an agent: pf-agent --scheduler ... --printer-id ID)\n",
                   o.n_states || o.queue ? " match" : "");
        else
            fc_table_print(t, stdout);
        fc_table_destroy(t);
    }
    fc_pages_release(&pages);
    return rc;
}

/* ---------------------------------------------------------------- printer */

static void print_printer(const Printfarm__V1__Printer *p, FILE *out)
{
    char b[48], seen[48];
    fprintf(out, "printer %s\n", p->id);
    fprintf(out, "  profile:      %s\n", p->profile);
    fprintf(out, "  state:        %s%s%s\n", printer_state(p->state, b, sizeof(b)),
            p->state_reason[0] ? " — " : "", p->state_reason);
    if (p->current_attempt_id[0])
        fprintf(out, "  attempt:      %s (job %s, %.0f%%)\n", p->current_attempt_id,
                p->current_job_id, (double)p->progress * 100);
    for (size_t i = 0; i < p->n_materials; i++)
        fprintf(out, "  extruder %u:   %s%s%s\n", p->materials[i]->extruder,
                p->materials[i]->material, p->materials[i]->colour[0] ? " " : "",
                p->materials[i]->colour);
    for (size_t i = 0; i < p->n_queues; i++)
        fprintf(out, "  queue:        %s (weight %u)\n", p->queues[i]->queue, p->queues[i]->weight);
    for (size_t i = 0; i < p->n_labels; i++)
        fprintf(out, "  label:        %s=%s\n", p->labels[i]->key, p->labels[i]->value);
    for (size_t i = 0; i < p->n_windows; i++)
        fprintf(out, "  window:       %02u:%02u-%02u:%02u (UTC%+d min)\n",
                p->windows[i]->start_minute / 60, p->windows[i]->start_minute % 60,
                p->windows[i]->end_minute / 60, p->windows[i]->end_minute % 60,
                p->windows[i]->utc_offset_minutes);
    for (size_t i = 0; i < p->n_temperatures; i++)
        fprintf(out, "  temperature:  %s %.1f °C (target %.1f)\n", p->temperatures[i]->sensor,
                p->temperatures[i]->actual, p->temperatures[i]->target);
    if (p->capabilities != NULL) {
        const Printfarm__V1__AgentCapabilities *c = p->capabilities;
        fprintf(out, "  driver:       %s%s%s, %u extruder(s)%s%s\n", c->driver,
                c->firmware[0] ? ", firmware " : "", c->firmware, c->extruders,
                c->can_pause ? ", can pause" : "",
                c->auto_clear ? ", clears its bed itself" : ", bed cleared by hand");
    }
    fprintf(out, "  agent:        %s\n", p->agent_version[0] ? p->agent_version : "-");
    fprintf(out, "  cached files: %u\n", p->cached_files);
    fprintf(out, "  failures:     %u in a row\n", p->consecutive_failures);
    fprintf(out, "  last seen:    %s\n", fc_fmt_age(p->last_seen_unix_ms, seen, sizeof(seen)));
}

static int print_printer_reply(struct fc_ctx *ctx, const Printfarm__V1__Printer *p,
                               const char *what)
{
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "printer");
        fc_json_message(&j, p ? &p->base : NULL);
        fc_json_end_object(&j);
        return fc_json_print(&j, stdout);
    }
    if (p != NULL) {
        char b[48];
        printf("printer %s %s: %s\n", p->id, what, printer_state(p->state, b, sizeof(b)));
    }
    return FC_EXIT_OK;
}

static const struct fc_cmd cmd_show = {"printer show", "ID",
                                       "Shows one printer: state, materials, temperatures, "
                                       "driver.\n",
                                       NULL};
static const struct fc_cmd cmd_release = {
    "printer release", "ID",
    "Returns a quarantined printer to service (resets its failure counter).\n", NULL};

struct clear_opts {
    const char *attempt;
};
static const struct option clear_options[] = {
    {"attempt", required_argument, NULL, 1},
    {NULL, 0, NULL, 0},
};
static const struct fc_cmd cmd_clear = {
    "printer clear", "ID [--attempt ATTEMPT]",
    "Confirms the printer's bed is empty, so it may print again (awaiting_clear -> idle).\n"
    "  --attempt ATTEMPT   refuse unless this is the print the scheduler expects removed\n",
    clear_options};

struct materials_opts {
    uint32_t extruder;
};
static const struct option materials_options[] = {
    {"extruder", required_argument, NULL, 1},
    {NULL, 0, NULL, 0},
};
static const struct fc_cmd cmd_materials = {
    "printer materials", "ID [--extruder N] MATERIAL[:COLOUR]",
    "Records what is loaded in one extruder (the others are kept): PLA, PLA:black,\n"
    "PETG:#ffffff. `-` empties the extruder.\n"
    "  --extruder N   which extruder (default 0)\n",
    materials_options};

static int clear_opt(void *arg, int key, const char *v)
{
    ((struct clear_opts *)arg)->attempt = v;
    return key == 1 ? FC_EXIT_OK : FC_EXIT_USAGE;
}

static int materials_opt(void *arg, int key, const char *v)
{
    struct materials_opts *o = arg;
    if (key != 1 || !fc_parse_u32(v, 0, EXTRUDERS_MAX - 1, &o->extruder))
        return fc_usage(&cmd_materials, "--extruder takes 0..%d, not '%s'", EXTRUDERS_MAX - 1, v);
    return FC_EXIT_OK;
}

static int update_printer(struct fc_ctx *ctx, Printfarm__V1__UpdatePrinterRequest *req,
                          const char *what)
{
    Printfarm__V1__UpdatePrinterResponse *r = NULL;
    int rc =
        fc_sched_call(ctx, "/printfarm.v1.Scheduler/UpdatePrinter", &req->base,
                      &printfarm__v1__update_printer_response__descriptor, (ProtobufCMessage **)&r);
    if (rc != FC_EXIT_OK)
        return rc;
    rc = print_printer_reply(ctx, r->printer, what);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

static int set_materials(struct fc_ctx *ctx, const char *id, uint32_t extruder, const char *spec)
{
    struct fc_pages pages;
    const Printfarm__V1__Printer *p;
    int rc = find_printer(ctx, id, &pages, &p);
    if (rc != FC_EXIT_OK)
        return rc;
    Printfarm__V1__ExtruderMaterial items[EXTRUDERS_MAX + 1], *ptrs[EXTRUDERS_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < p->n_materials && n < EXTRUDERS_MAX; i++)
        if (p->materials[i]->extruder != extruder) {
            items[n] = *p->materials[i];
            ptrs[n] = &items[n];
            n++;
        }
    char material[128] = "", *colour = NULL;
    if (strcmp(spec, "-") != 0) {
        snprintf(material, sizeof(material), "%s", spec);
        colour = strchr(material, ':');
        if (colour != NULL)
            *colour++ = '\0';
        printfarm__v1__extruder_material__init(&items[n]);
        items[n].extruder = extruder;
        items[n].material = material;
        items[n].colour = colour != NULL ? colour : "";
        ptrs[n] = &items[n];
        n++;
    }
    Printfarm__V1__UpdatePrinterRequest req = PRINTFARM__V1__UPDATE_PRINTER_REQUEST__INIT;
    Printfarm__V1__ExtruderMaterials mats = PRINTFARM__V1__EXTRUDER_MATERIALS__INIT;
    mats.n_items = n;
    mats.items = ptrs;
    req.id = (char *)id;
    req.materials = &mats;
    rc = update_printer(ctx, &req, "updated");
    fc_pages_release(&pages);
    return rc;
}

int fc_cmd_printer(struct fc_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *verb;
        const struct fc_cmd *cmd;
        fc_opt_fn fn;
        int nargs;
    } verbs[] = {
        {"show", &cmd_show, NULL, 1},
        {"clear", &cmd_clear, clear_opt, 1},
        {"materials", &cmd_materials, materials_opt, 2},
        {"release", &cmd_release, NULL, 1},
    };
    const struct fc_cmd *cmd = NULL;
    fc_opt_fn fn = NULL;
    int nargs = 0;
    for (size_t i = 0; argc >= 2 && i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(argv[1], verbs[i].verb) == 0) {
            cmd = verbs[i].cmd;
            fn = verbs[i].fn;
            nargs = verbs[i].nargs;
        }
    if (cmd == NULL)
        return fc_usage(NULL, "printer: expected show, clear, materials or release%s%s",
                        argc >= 2 ? "; got " : "", argc >= 2 ? argv[1] : "");
    struct clear_opts co = {0};
    struct materials_opts mo = {0};
    void *arg = cmd == &cmd_clear ? (void *)&co : (void *)&mo;
    int first, rc;
    if (!fc_parse(ctx, cmd, argc - 1, argv + 1, fn, arg, &first, &rc))
        return rc;
    char **args = argv + 1 + first;
    int n = argc - 1 - first;
    if (n != nargs)
        return fc_usage(cmd, n < nargs ? "missing %s" : "too many arguments (expected %s)",
                        nargs == 1 ? "the printer ID" : "the printer ID and MATERIAL[:COLOUR]");
    const char *id = args[0];

    if (cmd == &cmd_show) {
        struct fc_pages pages;
        const Printfarm__V1__Printer *p;
        if ((rc = find_printer(ctx, id, &pages, &p)) != FC_EXIT_OK)
            return rc;
        if (ctx->cfg.json) {
            struct fc_json j;
            fc_json_init(&j, true);
            fc_json_message(&j, &p->base);
            rc = fc_json_print(&j, stdout);
        } else {
            print_printer(p, stdout);
        }
        fc_pages_release(&pages);
        return rc;
    }
    if (cmd == &cmd_clear) {
        Printfarm__V1__ConfirmBedClearRequest req = PRINTFARM__V1__CONFIRM_BED_CLEAR_REQUEST__INIT;
        Printfarm__V1__ConfirmBedClearResponse *r = NULL;
        req.printer_id = (char *)id;
        req.attempt_id = (char *)(co.attempt ? co.attempt : "");
        rc = fc_sched_call(ctx, "/printfarm.v1.Scheduler/ConfirmBedClear", &req.base,
                           &printfarm__v1__confirm_bed_clear_response__descriptor,
                           (ProtobufCMessage **)&r);
        if (rc != FC_EXIT_OK)
            return rc;
        rc = print_printer_reply(ctx, r->printer, "bed clear");
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return rc;
    }
    if (cmd == &cmd_materials)
        return set_materials(ctx, id, mo.extruder, args[1]);
    Printfarm__V1__UpdatePrinterRequest req = PRINTFARM__V1__UPDATE_PRINTER_REQUEST__INIT;
    req.id = (char *)id;
    req.release_quarantine = true;
    return update_printer(ctx, &req, "released");
}
