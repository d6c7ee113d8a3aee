/* pf-files: wiring only. Parses flags, opens the blob store, starts the
 * worker queue and the gRPC + admin servers, and serves until SIGTERM. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include "discovery_client.h"
#include "files_service.h"
#include "log.h"
#include "service.h"

struct files_flags {
    struct pf_service_flags common;
    char *data_dir;
    uint64_t max_blob;
    uint64_t max_chunk;
    int64_t workers;
    char *discovery;
};

static bool ready(void *arg, struct pf_buf *why)
{
    (void)arg;
    (void)why;
    return !pf_signals_stop_requested();
}

int main(int argc, char **argv)
{
    struct files_flags f = {0};
    const struct pf_flag flags[] = {
        PF_SERVICE_FLAGS(f.common, "127.0.0.1:7300", "127.0.0.1:9300"),
        {"data-dir", PF_FLAG_STRING, &f.data_dir, "./data/files",
         "directory of the blob store (created if missing)", 0, 0},
        {"max-blob-size", PF_FLAG_SIZE, &f.max_blob, "1G", "largest blob an upload may declare", 1,
         INT64_MAX},
        {"max-chunk-size", PF_FLAG_SIZE, &f.max_chunk, "1M", "largest chunk in one upload message",
         1024, 64 * 1024 * 1024},
        {"workers", PF_FLAG_INT, &f.workers, "4", "threads doing disk work", 1, 256},
        {"discovery", PF_FLAG_STRING, &f.discovery, NULL,
         "pf-discovery HOST:PORT to register with (empty: do not register)", 0, 0},
    };
    const struct pf_config cfg = {
        .program = "pf-files",
        .summary = "Printfarm content-addressed storage of gcode blobs and print bundles.",
        .flags = flags,
        .flag_count = sizeof(flags) / sizeof(flags[0]),
    };
    struct pf_service svc;
    struct pf_store *store = NULL;
    struct pf_workq *wq = NULL;
    struct pf_files_service *files = NULL;
    struct pf_discovery_client *disc = NULL;
    char advertise[PF_RPC_TARGET_MAX], instance_id[80];
    struct pf_error err;
    int exit_code = 1;

    /* Upload and download chunks are ~1 MiB buffers allocated per message:
     * keep them on the heap instead of a fresh mmap (and page faults) each. */
    mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    if (pf_service_parse_flags(&cfg, argc, argv, &exit_code) != PF_OK)
        goto out_config;
    exit_code = 1;
    /* A chunk message carries protobuf framing around the bytes. */
    if (f.common.max_message < f.max_chunk + 1024) {
        fprintf(stderr,
                "pf-files: --max-message (%llu) must exceed --max-chunk-size (%llu) by "
                "at least 1 KiB\n",
                (unsigned long long)f.common.max_message, (unsigned long long)f.max_chunk);
        exit_code = 2;
        goto out_config;
    }
    if (pf_service_init(&svc, "pf-files", &f.common, "printfarm.v1.Files", &err) != PF_OK) {
        fprintf(stderr, "pf-files: %s\n", err.msg);
        exit_code = 2;
        goto out_config;
    }
    struct pf_store_limits lim = {.max_blob_bytes = f.max_blob, .max_chunk_bytes = f.max_chunk};
    if (pf_store_open(f.data_dir, &lim, &store, &err) != PF_OK) {
        pf_log_error("store_open_failed", "dir=%s error=\"%s\"", f.data_dir, err.msg);
        goto out_service;
    }
    wq = pf_workq_create((int)f.workers, 4096);
    files = pf_files_service_create(store, wq, svc.metrics);
    if (wq == NULL || files == NULL) {
        pf_log_error("startup_failed", "error=\"out of memory\"");
        goto out_files;
    }
    if (pf_files_service_register(files, svc.rpc, &err) != PF_OK ||
        pf_service_start(&svc, ready, NULL, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"%s\"", err.msg);
        goto out_files;
    }
    pf_discovery_advertise(f.common.listen, pf_rpc_server_port(svc.rpc), advertise,
                           sizeof(advertise));
    pf_discovery_default_id(pf_rpc_server_port(svc.rpc), instance_id, sizeof(instance_id));
    if (pf_discovery_register_self(f.discovery, PF_DISCOVERY_KIND_FILES, instance_id, advertise,
                                   NULL, 0, NULL, "pf-files", &disc, &err) != PF_OK) {
        pf_log_error("startup_failed", "error=\"--discovery: %s\"", err.msg);
        goto out_files;
    }
    pf_log_info("files_ready", "data_dir=%s max_blob=%llu max_chunk=%llu", f.data_dir,
                (unsigned long long)f.max_blob, (unsigned long long)f.max_chunk);
    pf_service_run(&svc);
    exit_code = 0;
out_files:
    pf_discovery_client_destroy(disc); /* deregisters */
    /* The server is drained before the workers and the store go away. */
    pf_rpc_server_destroy(svc.rpc);
    svc.rpc = NULL;
    if (wq != NULL)
        pf_workq_destroy(wq);
    pf_files_service_destroy(files);
    pf_store_close(store);
out_service:
    pf_service_release(&svc);
out_config:
    pf_config_release(&cfg);
    pf_log_info("exit", "code=%d", exit_code);
    return exit_code;
}
