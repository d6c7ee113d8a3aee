/* farmctl bundle create / bundle show / submit.
 *
 * A bundle file is a POSIX tar archive (ustar; `tar tvf` lists it) holding
 * `bundle.pb`, the printfarm.v1.Bundle manifest (name, labels, and per
 * printer profile the gcode's digest, size and slicer metadata), followed by
 * `gcode/PROFILE.gcode` for each profile. `submit` takes such a file or a
 * single gcode file (with --profile), asks pf-files which blobs it lacks
 * (FindMissing), uploads only those, stores the manifest (PutBundle) and
 * submits the job (SubmitJob). Files are mapped read-only, never copied. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "farmctl.h"
#include "files_client.h"
#include "gcode_meta.h"
#include "printfarm/v1/files.pb-c.h"
#include "printfarm/v1/scheduler.pb-c.h"

#define FILES_MAX    64 /* pf-files' PF_BUNDLE_FILES_MAX */
#define LABELS_MAX   32
#define PROFILE_MAX  64
#define NAME_MAX_    200
#define MANIFEST_MAX (256 * 1024)
#define TAR_BLOCK    512

/* One gcode file of a bundle: where its bytes are and what the manifest says. */
struct gfile {
    char profile[PROFILE_MAX + 1];
    char path[PATH_MAX];
    const uint8_t *data;
    size_t len;
    void *map; /* own mapping; NULL when the bytes are inside the bundle file's */
    size_t map_len;
    struct pf_digest digest;
    char hex[PF_DIGEST_HEX_LEN + 1];
    struct pf_gcode_meta meta;
    char slicer[PF_GCODE_META_NAME_MAX * 2 + 2];
    Printfarm__V1__BundleFile bf;
    Printfarm__V1__Digest dg;
    Printfarm__V1__GcodeMetadata md;
};

struct local_bundle {
    char name[NAME_MAX_ + 1];
    struct gfile files[FILES_MAX];
    size_t n;
    Printfarm__V1__Label labels[LABELS_MAX];
    Printfarm__V1__Label *label_ptrs[LABELS_MAX];
    size_t n_labels;
    Printfarm__V1__BundleFile *file_ptrs[FILES_MAX];
    Printfarm__V1__Bundle b;         /* built here (points into this struct) */
    Printfarm__V1__Bundle *unpacked; /* or read from a bundle file */
    void *map;                       /* the bundle file's mapping */
    size_t map_len;
};

static void bundle_release(struct local_bundle *lb)
{
    for (size_t i = 0; i < lb->n; i++)
        if (lb->files[i].map != NULL)
            munmap(lb->files[i].map, lb->files[i].map_len);
    for (size_t i = 0; i < lb->n_labels; i++) {
        free(lb->labels[i].key);
        free(lb->labels[i].value);
    }
    if (lb->unpacked != NULL)
        protobuf_c_message_free_unpacked(&lb->unpacked->base, NULL);
    if (lb->map != NULL)
        munmap(lb->map, lb->map_len);
    memset(lb, 0, sizeof(*lb));
}

static const Printfarm__V1__Bundle *manifest(const struct local_bundle *lb)
{
    return lb->unpacked != NULL ? lb->unpacked : &lb->b;
}

/* Maps path read-only; an empty file gives len 0 and no mapping. */
static int map_file(const char *path, void **map, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fc_err("cannot open '%s': %s", path, strerror(errno));
        return FC_EXIT_FAILED;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fc_err("'%s' is not a regular file", path);
        close(fd);
        return FC_EXIT_FAILED;
    }
    *len = (size_t)st.st_size;
    *map = NULL;
    if (*len > 0) {
        *map = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (*map == MAP_FAILED) {
            *map = NULL;
            fc_err("cannot read '%s': %s", path, strerror(errno));
            close(fd);
            return FC_EXIT_FAILED;
        }
    }
    close(fd);
    return FC_EXIT_OK;
}

static bool valid_profile(const char *p)
{
    size_t n = strlen(p);
    return n > 0 && n <= PROFILE_MAX &&
           strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* Fills the manifest entry of g from its bytes: digest, size, metadata;
 * warns about gcode without slicer metadata. */
static void describe(struct gfile *g, bool quiet)
{
    struct pf_error err;
    pf_sha256(g->data, g->len, &g->digest);
    pf_digest_to_hex(&g->digest, g->hex);
    if (pf_gcode_meta_parse((const char *)g->data, g->len, &g->meta, &err) != PF_OK)
        memset(&g->meta, 0, sizeof(g->meta));
    const struct pf_gcode_meta *m = &g->meta;
    printfarm__v1__gcode_metadata__init(&g->md);
    pf_gcode_meta_slicer_label(m, g->slicer, sizeof(g->slicer));
    g->md.slicer = g->slicer;
    g->md.estimated_seconds = m->estimated_seconds;
    g->md.filament_mm = m->filament_mm;
    g->md.filament_g = m->filament_g;
    g->md.material = (char *)m->material;
    g->md.colour = (char *)m->colour;
    g->md.printer_model = (char *)m->printer_model;
    g->md.nozzle_mm = m->nozzle_mm;
    printfarm__v1__digest__init(&g->dg);
    g->dg.sha256 = g->hex;
    printfarm__v1__bundle_file__init(&g->bf);
    g->bf.profile = g->profile;
    g->bf.digest = &g->dg;
    g->bf.size = g->len;
    g->bf.metadata = &g->md;
    if (quiet)
        return;
    if (m->is_probably_binary)
        fc_warn("'%s' does not look like text gcode (binary gcode is not supported by the "
                "metadata reader); accepted with its metadata unknown",
                g->path);
    else if ((m->found & (PF_GCODE_META_ESTIMATED_SECONDS | PF_GCODE_META_FILAMENT_MM |
                          PF_GCODE_META_FILAMENT_G | PF_GCODE_META_MATERIAL)) == 0)
        fc_warn("'%s' has no slicer metadata (estimated time, filament, material unknown); "
                "accepted as is",
                g->path);
    if (m->warnings > 0)
        fc_warn("'%s': %u malformed metadata value(s) ignored (first: %s)", g->path, m->warnings,
                m->warning);
}

static int add_gcode(struct local_bundle *lb, const char *profile, const char *path)
{
    if (lb->n == FILES_MAX) {
        fc_err("a bundle holds at most %d gcode files", FILES_MAX);
        return FC_EXIT_USAGE;
    }
    if (!valid_profile(profile)) {
        fc_err("bad profile name '%.80s': 1 to %d of A-Z a-z 0-9 . _ -", profile, PROFILE_MAX);
        return FC_EXIT_USAGE;
    }
    for (size_t i = 0; i < lb->n; i++)
        if (strcmp(lb->files[i].profile, profile) == 0) {
            fc_err("profile '%s' is given twice", profile);
            return FC_EXIT_USAGE;
        }
    struct gfile *g = &lb->files[lb->n];
    memset(g, 0, sizeof(*g));
    snprintf(g->profile, sizeof(g->profile), "%s", profile);
    snprintf(g->path, sizeof(g->path), "%s", path);
    int rc = map_file(path, &g->map, &g->map_len);
    if (rc != FC_EXIT_OK)
        return rc;
    g->data = g->map != NULL ? g->map : (const uint8_t *)"";
    g->len = g->map_len;
    lb->n++;
    describe(g, false);
    return FC_EXIT_OK;
}

static int add_label(struct local_bundle *lb, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv) {
        fc_err("bad label '%.80s': expected KEY=VALUE", kv);
        return FC_EXIT_USAGE;
    }
    if (lb->n_labels == LABELS_MAX) {
        fc_err("at most %d labels", LABELS_MAX);
        return FC_EXIT_USAGE;
    }
    Printfarm__V1__Label *l = &lb->labels[lb->n_labels];
    printfarm__v1__label__init(l);
    l->key = strndup(kv, (size_t)(eq - kv));
    l->value = strdup(eq + 1);
    lb->label_ptrs[lb->n_labels++] = l;
    return FC_EXIT_OK;
}

static void finish_manifest(struct local_bundle *lb)
{
    printfarm__v1__bundle__init(&lb->b);
    lb->b.name = lb->name;
    for (size_t i = 0; i < lb->n; i++)
        lb->file_ptrs[i] = &lb->files[i].bf;
    lb->b.n_files = lb->n;
    lb->b.files = lb->file_ptrs;
    lb->b.n_labels = lb->n_labels;
    lb->b.labels = lb->label_ptrs;
}

/* "dir/cube_mk4.gcode" -> "cube_mk4" */
static void stem(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    snprintf(out, size, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot != NULL && dot != out)
        *dot = '\0';
}

/* ---------------------------------------------------------------- tar */

static void octal(char *field, size_t width, uint64_t v)
{
    /* width-1 digits and a NUL */
    snprintf(field, width, "%0*" PRIo64, (int)width - 1, v);
}

static int write_all(FILE *f, const void *data, size_t len)
{
    return len == 0 || fwrite(data, 1, len, f) == len ? 0 : -1;
}

static int tar_entry(FILE *f, const char *name, const void *data, size_t len)
{
    char h[TAR_BLOCK];
    memset(h, 0, sizeof(h));
    snprintf(h, 100, "%s", name);
    octal(h + 100, 8, 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, len);
    octal(h + 136, 12, (uint64_t)time(NULL));
    memset(h + 148, ' ', 8);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    snprintf(h + 265, 32, "printfarm");
    snprintf(h + 297, 32, "printfarm");
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof(h); i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    static const char zero[TAR_BLOCK];
    size_t pad = (TAR_BLOCK - len % TAR_BLOCK) % TAR_BLOCK;
    if (write_all(f, h, sizeof(h)) != 0 || write_all(f, data, len) != 0 ||
        write_all(f, zero, pad) != 0)
        return -1;
    return 0;
}

struct tar_item {
    char name[101];
    const uint8_t *data;
    size_t len;
};

static bool is_tar(const uint8_t *d, size_t len)
{
    return len >= TAR_BLOCK && memcmp(d + 257, "ustar", 5) == 0;
}

static uint64_t parse_octal(const char *f, size_t width, bool *ok)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < width && f[i] == ' ')
        i++;
    for (; i < width && f[i] >= '0' && f[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(f[i] - '0');
    if (i < width && f[i] != '\0' && f[i] != ' ')
        *ok = false;
    return v;
}

/* Lists up to max regular-file entries; false on a malformed archive. */
static bool tar_read(const uint8_t *d, size_t len, struct tar_item *items, size_t max, size_t *n)
{
    size_t off = 0;
    *n = 0;
    while (off + TAR_BLOCK <= len) {
        const char *h = (const char *)d + off;
        bool zero = true;
        for (size_t i = 0; i < TAR_BLOCK && zero; i++)
            zero = h[i] == 0;
        if (zero)
            return true;
        bool ok = true;
        uint64_t size = parse_octal(h + 124, 12, &ok);
        uint64_t want = parse_octal(h + 148, 8, &ok);
        unsigned sum = 0;
        for (size_t i = 0; i < TAR_BLOCK; i++)
            sum += (i >= 148 && i < 156) ? ' ' : (unsigned char)h[i];
        if (!ok || sum != want || memcmp(h + 257, "ustar", 5) != 0)
            return false;
        off += TAR_BLOCK;
        if (size > len - off)
            return false;
        if ((h[156] == '0' || h[156] == '\0') && *n < max) {
            memset(items[*n].name, 0, sizeof(items[*n].name));
            memcpy(items[*n].name, h, 100);
            items[*n].data = d + off;
            items[*n].len = (size_t)size;
            (*n)++;
        }
        off += (size_t)((size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK);
    }
    return true;
}

/* Reads a bundle file: its manifest, and each file's bytes checked against
 * the digest the manifest names. */
static int read_bundle(const char *path, struct local_bundle *lb)
{
    memset(lb, 0, sizeof(*lb));
    int rc = map_file(path, &lb->map, &lb->map_len);
    if (rc != FC_EXIT_OK)
        return rc;
    struct tar_item items[FILES_MAX + 2];
    size_t n = 0;
    if (lb->map == NULL || !is_tar(lb->map, lb->map_len) ||
        !tar_read(lb->map, lb->map_len, items, FILES_MAX + 2, &n) || n == 0 ||
        strcmp(items[0].name, "bundle.pb") != 0) {
        fc_err("'%s' is not a bundle file (farmctl bundle create makes them)", path);
        return FC_EXIT_FAILED;
    }
    if (items[0].len > MANIFEST_MAX) {
        fc_err("'%s': the manifest is over %d bytes", path, MANIFEST_MAX);
        return FC_EXIT_FAILED;
    }
    lb->unpacked = printfarm__v1__bundle__unpack(NULL, items[0].len, items[0].data);
    if (lb->unpacked == NULL || lb->unpacked->n_files == 0 || lb->unpacked->n_files > FILES_MAX) {
        fc_err("'%s': the manifest bundle.pb is corrupt", path);
        return FC_EXIT_FAILED;
    }
    snprintf(lb->name, sizeof(lb->name), "%s", lb->unpacked->name);
    for (size_t i = 0; i < lb->unpacked->n_files; i++) {
        Printfarm__V1__BundleFile *bf = lb->unpacked->files[i];
        struct gfile *g = &lb->files[i];
        char want[PROFILE_MAX + 16];
        if (bf->profile == NULL || !valid_profile(bf->profile) || bf->digest == NULL ||
            bf->digest->sha256 == NULL) {
            fc_err("'%s': manifest entry %zu is malformed", path, i);
            return FC_EXIT_FAILED;
        }
        snprintf(want, sizeof(want), "gcode/%s.gcode", bf->profile);
        const struct tar_item *it = NULL;
        for (size_t k = 1; k < n; k++)
            if (strcmp(items[k].name, want) == 0)
                it = &items[k];
        if (it == NULL) {
            fc_err("'%s': the gcode for profile '%s' is missing", path, bf->profile);
            return FC_EXIT_FAILED;
        }
        snprintf(g->profile, sizeof(g->profile), "%s", bf->profile);
        snprintf(g->path, sizeof(g->path), "%s:%s", path, want);
        g->data = it->data;
        g->len = it->len;
        pf_sha256(g->data, g->len, &g->digest);
        pf_digest_to_hex(&g->digest, g->hex);
        if (strcmp(g->hex, bf->digest->sha256) != 0 || bf->size != g->len) {
            fc_err("'%s': the gcode for profile '%s' does not match its manifest (the file is "
                   "damaged; create the bundle again)",
                   path, bf->profile);
            return FC_EXIT_FAILED;
        }
        g->meta.found = 0;
        lb->n++;
    }
    return FC_EXIT_OK;
}

static int write_bundle(const char *out, struct local_bundle *lb)
{
    const Printfarm__V1__Bundle *b = manifest(lb);
    size_t mlen = printfarm__v1__bundle__get_packed_size(b);
    uint8_t *mbytes = malloc(mlen ? mlen : 1);
    char tmp[PATH_MAX];
    int rc = FC_EXIT_FAILED;
    if (mbytes == NULL) {
        fc_err("out of memory");
        return FC_EXIT_FAILED;
    }
    printfarm__v1__bundle__pack(b, mbytes);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", out, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        fc_err("cannot create '%s': %s", tmp, strerror(errno));
        goto out_free;
    }
    bool ok = tar_entry(f, "bundle.pb", mbytes, mlen) == 0;
    for (size_t i = 0; ok && i < lb->n; i++) {
        char name[PROFILE_MAX + 16];
        snprintf(name, sizeof(name), "gcode/%s.gcode", lb->files[i].profile);
        ok = tar_entry(f, name, lb->files[i].data, lb->files[i].len) == 0;
    }
    static const char zero[2 * TAR_BLOCK];
    ok = ok && write_all(f, zero, sizeof(zero)) == 0;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = false;
    if (!ok || rename(tmp, out) != 0) {
        fc_err("cannot write '%s': %s", out, strerror(errno));
        unlink(tmp);
        goto out_free;
    }
    rc = FC_EXIT_OK;
out_free:
    free(mbytes);
    return rc;
}

/* The table (or JSON) describing a bundle's files. */
static int print_bundle(struct fc_ctx *ctx, const char *path, struct local_bundle *lb)
{
    const Printfarm__V1__Bundle *b = manifest(lb);
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "path");
        fc_json_string(&j, path);
        fc_json_key(&j, "bundle");
        fc_json_message(&j, &b->base);
        fc_json_end_object(&j);
        return fc_json_print(&j, stdout);
    }
    static const char *const hdr[] = {"PROFILE",  "SIZE",     "SLICER", "ESTIMATED",
                                      "FILAMENT", "MATERIAL", "COLOUR", "PRINTER"};
    struct fc_table *t = fc_table_create(8, hdr);
    for (size_t i = 0; i < b->n_files; i++) {
        const Printfarm__V1__BundleFile *f = b->files[i];
        const Printfarm__V1__GcodeMetadata *m = f->metadata;
        char size[32], est[32] = "", fil[48] = "";
        fc_fmt_size(f->size, size, sizeof(size));
        if (m != NULL && m->estimated_seconds > 0)
            fc_fmt_duration(m->estimated_seconds, est, sizeof(est));
        if (m != NULL && (m->filament_g > 0 || m->filament_mm > 0))
            snprintf(fil, sizeof(fil), "%.2f g / %.2f m", m->filament_g, m->filament_mm / 1000);
        const char *row[] = {f->profile,
                             size,
                             m ? m->slicer : "",
                             est,
                             fil,
                             m ? m->material : "",
                             m ? m->colour : "",
                             m ? m->printer_model : ""};
        fc_table_add(t, row);
    }
    printf("bundle '%s' (%s)\n", b->name, path);
    fc_table_print(t, stdout);
    fc_table_destroy(t);
    return FC_EXIT_OK;
}

/* ---------------------------------------------------------------- bundle */

struct create_opts {
    struct local_bundle *lb;
    const char *name;
    char *pending[FILES_MAX][2];
    size_t n_pending;
    char *labels[LABELS_MAX];
    size_t n_labels;
};

enum { O_PROFILE = 1, O_NAME, O_LABEL };

static const struct option create_options[] = {
    {"profile", required_argument, NULL, O_PROFILE},
    {"name", required_argument, NULL, O_NAME},
    {"label", required_argument, NULL, O_LABEL},
    {NULL, 0, NULL, 0},
};

static const struct fc_cmd cmd_create = {
    "bundle create",
    "OUT --profile NAME=FILE.gcode [--profile NAME=FILE.gcode ...] [--name NAME] "
    "[--label KEY=VALUE ...]",
    "Builds a bundle file OUT: one gcode file per printer profile, with the slicer metadata\n"
    "read from each (PrusaSlicer/SuperSlicer, OrcaSlicer/BambuStudio, Cura, Simplify3D).\n"
    "Gcode without metadata is accepted with a warning.\n"
    "  --profile NAME=FILE   the gcode printers of profile NAME print (repeat per profile)\n"
    "  --name NAME           the bundle's name (default: OUT without its extension)\n"
    "  --label KEY=VALUE     free-form metadata (source model, author), repeatable\n",
    create_options,
};

static int create_opt(void *arg, int key, const char *v)
{
    struct create_opts *o = arg;
    switch (key) {
    case O_PROFILE: {
        const char *eq = strchr(v, '=');
        if (eq == NULL || eq == v || eq[1] == '\0')
            return fc_usage(&cmd_create, "--profile takes NAME=FILE.gcode, not '%s'", v);
        if (o->n_pending == FILES_MAX)
            return fc_usage(&cmd_create, "at most %d profiles", FILES_MAX);
        o->pending[o->n_pending][0] = strndup(v, (size_t)(eq - v));
        o->pending[o->n_pending][1] = strdup(eq + 1);
        o->n_pending++;
        return FC_EXIT_OK;
    }
    case O_NAME:
        o->name = v;
        return FC_EXIT_OK;
    case O_LABEL:
        if (o->n_labels == LABELS_MAX)
            return fc_usage(&cmd_create, "at most %d labels", LABELS_MAX);
        o->labels[o->n_labels++] = strdup(v);
        return FC_EXIT_OK;
    }
    return FC_EXIT_USAGE;
}

static int bundle_create(struct fc_ctx *ctx, int argc, char **argv)
{
    static struct local_bundle lb;
    struct create_opts o = {.lb = &lb};
    int first, rc;
    if (!fc_parse(ctx, &cmd_create, argc, argv, create_opt, &o, &first, &rc))
        goto out;
    if (argc - first != 1) {
        rc = fc_usage(&cmd_create, argc - first == 0 ? "missing OUT (the bundle file to write)"
                                                     : "one OUT file only");
        goto out;
    }
    if (o.n_pending == 0) {
        rc = fc_usage(&cmd_create, "give at least one --profile NAME=FILE.gcode");
        goto out;
    }
    const char *out = argv[first];
    char name[NAME_MAX_ + 1];
    if (o.name != NULL)
        snprintf(name, sizeof(name), "%s", o.name);
    else
        stem(out, name, sizeof(name));
    if (name[0] == '\0') {
        rc = fc_usage(&cmd_create, "the bundle needs a name (--name)");
        goto out;
    }
    memset(&lb, 0, sizeof(lb));
    snprintf(lb.name, sizeof(lb.name), "%s", name);
    for (size_t i = 0; i < o.n_pending; i++)
        if ((rc = add_gcode(&lb, o.pending[i][0], o.pending[i][1])) != FC_EXIT_OK)
            goto out_bundle;
    for (size_t i = 0; i < o.n_labels; i++)
        if ((rc = add_label(&lb, o.labels[i])) != FC_EXIT_OK)
            goto out_bundle;
    finish_manifest(&lb);
    if ((rc = write_bundle(out, &lb)) == FC_EXIT_OK) {
        rc = print_bundle(ctx, out, &lb);
        if (!ctx->cfg.json)
            fprintf(stderr, "farmctl: wrote %s (submit it with: farmctl submit %s --count N)\n",
                    out, out);
    }
out_bundle:
    bundle_release(&lb);
out:
    for (size_t i = 0; i < o.n_pending; i++) {
        free(o.pending[i][0]);
        free(o.pending[i][1]);
    }
    for (size_t i = 0; i < o.n_labels; i++)
        free(o.labels[i]);
    return rc;
}

static const struct fc_cmd cmd_show = {
    "bundle show",
    "FILE",
    "Lists what a bundle file holds (and checks every gcode against its digest).\n",
    NULL,
};

static int bundle_show(struct fc_ctx *ctx, int argc, char **argv)
{
    static struct local_bundle lb;
    int first, rc;
    if (!fc_parse(ctx, &cmd_show, argc, argv, NULL, NULL, &first, &rc))
        return rc;
    if (argc - first != 1)
        return fc_usage(&cmd_show, "give one bundle FILE");
    rc = read_bundle(argv[first], &lb);
    if (rc == FC_EXIT_OK)
        rc = print_bundle(ctx, argv[first], &lb);
    bundle_release(&lb);
    return rc;
}

int fc_cmd_bundle(struct fc_ctx *ctx, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "create") == 0)
        return bundle_create(ctx, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "show") == 0)
        return bundle_show(ctx, argc - 1, argv + 1);
    return fc_usage(NULL, "bundle: expected 'create' or 'show'%s%s", argc >= 2 ? ", got " : "",
                    argc >= 2 ? argv[1] : "");
}

/* ---------------------------------------------------------------- submit */

struct submit_opts {
    uint32_t count;
    int32_t priority;
    const char *material, *colour, *queue, *name, *idem;
    const char *profiles[FILES_MAX];
    size_t n_profiles;
    const char *labels[LABELS_MAX];
    size_t n_labels;
    bool have_extruder, hold;
    uint32_t extruder, max_attempts, max_printers;
};

enum {
    S_COUNT = 1,
    S_PRIORITY,
    S_MATERIAL,
    S_COLOUR,
    S_QUEUE,
    S_PROFILE,
    S_IDEM,
    S_NAME,
    S_LABEL,
    S_EXTRUDER,
    S_HOLD,
    S_MAX_ATTEMPTS,
    S_MAX_PRINTERS,
};

static const struct option submit_options[] = {
    {"count", required_argument, NULL, S_COUNT},
    {"priority", required_argument, NULL, S_PRIORITY},
    {"material", required_argument, NULL, S_MATERIAL},
    {"colour", required_argument, NULL, S_COLOUR},
    {"color", required_argument, NULL, S_COLOUR},
    {"queue", required_argument, NULL, S_QUEUE},
    {"profile", required_argument, NULL, S_PROFILE},
    {"idempotency-key", required_argument, NULL, S_IDEM},
    {"name", required_argument, NULL, S_NAME},
    {"label", required_argument, NULL, S_LABEL},
    {"extruder", required_argument, NULL, S_EXTRUDER},
    {"hold", no_argument, NULL, S_HOLD},
    {"max-attempts-per-printer", required_argument, NULL, S_MAX_ATTEMPTS},
    {"max-printers", required_argument, NULL, S_MAX_PRINTERS},
    {NULL, 0, NULL, 0},
};

static const struct fc_cmd cmd_submit = {
    "submit",
    "FILE.gcode|BUNDLE [--count N] [--priority P] [--material M] [--colour C] [--queue Q] "
    "[--profile NAME] [--idempotency-key K] [...]",
    "Uploads what pf-files lacks, stores the bundle and queues a job; prints the job id\n"
    "(progress goes to stderr). A single gcode file needs --profile: the printer profile\n"
    "it was sliced for; with a bundle, --profile restricts the job to those profiles.\n"
    "  --count N                  copies to print (default 1, at most 10000)\n"
    "  --priority P               higher runs first (default 0; negative allowed)\n"
    "  --material M, --colour C   the printer must have this loaded (\"PLA\", \"black\" or "
    "#rrggbb)\n"
    "  --extruder N               ... in this extruder (default: any)\n"
    "  --label KEY[=VALUE]        the printer must carry this label (repeatable)\n"
    "  --queue Q                  queue (default: the server's \"default\")\n"
    "  --name NAME                job name (default: the bundle's name)\n"
    "  --idempotency-key K        makes a retry safe: the same key returns the first job\n"
    "  --hold                     submit held (farmctl job release ID starts it)\n"
    "  --max-attempts-per-printer N, --max-printers N   failure policy (default: the farm's)\n",
    submit_options,
};

static int submit_opt(void *arg, int key, const char *v)
{
    struct submit_opts *o = arg;
    switch (key) {
    case S_COUNT:
        if (!fc_parse_u32(v, 1, 10000, &o->count))
            return fc_usage(&cmd_submit, "--count takes 1..10000, not '%s'", v);
        return FC_EXIT_OK;
    case S_PRIORITY:
        if (!fc_parse_i32(v, &o->priority))
            return fc_usage(&cmd_submit, "--priority takes an integer, not '%s'", v);
        return FC_EXIT_OK;
    case S_MATERIAL:
        o->material = v;
        return FC_EXIT_OK;
    case S_COLOUR:
        o->colour = v;
        return FC_EXIT_OK;
    case S_QUEUE:
        o->queue = v;
        return FC_EXIT_OK;
    case S_PROFILE:
        if (o->n_profiles == FILES_MAX)
            return fc_usage(&cmd_submit, "at most %d --profile", FILES_MAX);
        o->profiles[o->n_profiles++] = v;
        return FC_EXIT_OK;
    case S_IDEM:
        o->idem = v;
        return FC_EXIT_OK;
    case S_NAME:
        o->name = v;
        return FC_EXIT_OK;
    case S_LABEL:
        if (o->n_labels == LABELS_MAX)
            return fc_usage(&cmd_submit, "at most %d --label", LABELS_MAX);
        o->labels[o->n_labels++] = v;
        return FC_EXIT_OK;
    case S_EXTRUDER:
        if (!fc_parse_u32(v, 0, 63, &o->extruder))
            return fc_usage(&cmd_submit, "--extruder takes 0..63, not '%s'", v);
        o->have_extruder = true;
        return FC_EXIT_OK;
    case S_HOLD:
        o->hold = true;
        return FC_EXIT_OK;
    case S_MAX_ATTEMPTS:
        if (!fc_parse_u32(v, 1, 1000, &o->max_attempts))
            return fc_usage(&cmd_submit, "--max-attempts-per-printer takes 1..1000");
        return FC_EXIT_OK;
    case S_MAX_PRINTERS:
        if (!fc_parse_u32(v, 1, 1000, &o->max_printers))
            return fc_usage(&cmd_submit, "--max-printers takes 1..1000");
        return FC_EXIT_OK;
    }
    return FC_EXIT_USAGE;
}

/* FindMissing, then uploads the missing blobs, then PutBundle. */
static int store_bundle(struct fc_ctx *ctx, struct local_bundle *lb, char *bundle_hex,
                        size_t *uploaded, uint64_t *uploaded_bytes)
{
    int rc = FC_EXIT_OK;
    struct pf_rpc_channel *ch = fc_files(ctx, &rc);
    struct pf_error err;
    char target[PF_RPC_TARGET_MAX];
    if (ch == NULL)
        return rc;
    pf_rpc_channel_target(ch, target, sizeof(target));

    Printfarm__V1__Digest dg[FILES_MAX], *dgp[FILES_MAX];
    Printfarm__V1__FindMissingRequest fm = PRINTFARM__V1__FIND_MISSING_REQUEST__INIT;
    for (size_t i = 0; i < lb->n; i++) {
        printfarm__v1__digest__init(&dg[i]);
        dg[i].sha256 = lb->files[i].hex;
        dgp[i] = &dg[i];
    }
    fm.n_digests = lb->n;
    fm.digests = dgp;
    Printfarm__V1__FindMissingResponse *missing = NULL;
    if (pf_rpc_unary(ch, "/printfarm.v1.Files/FindMissing", &fm.base,
                     &printfarm__v1__find_missing_response__descriptor,
                     (ProtobufCMessage **)&missing, ctx->cfg.timeout_ms, &err) != PF_OK)
        return fc_report(ctx, "pf-files", target, &err);

    int64_t upload_timeout = ctx->cfg.timeout_ms > 300000 ? ctx->cfg.timeout_ms : 300000;
    *uploaded = 0;
    *uploaded_bytes = 0;
    for (size_t i = 0; i < lb->n && rc == FC_EXIT_OK; i++) {
        bool need = false;
        for (size_t k = 0; k < missing->n_missing; k++)
            if (missing->missing[k]->sha256 != NULL &&
                strcmp(missing->missing[k]->sha256, lb->files[i].hex) == 0)
                need = true;
        for (size_t k = 0; k < i; k++)
            if (strcmp(lb->files[k].hex, lb->files[i].hex) == 0)
                need = false; /* same bytes for two profiles: sent once */
        if (!need)
            continue;
        struct pf_files_upload_result res;
        if (pf_files_upload_buffer(ch, lb->files[i].data, lb->files[i].len, &lb->files[i].digest,
                                   upload_timeout, &res, &err) != PF_OK) {
            rc = fc_report(ctx, "pf-files", target, &err);
            break;
        }
        (*uploaded)++;
        *uploaded_bytes += lb->files[i].len;
    }
    protobuf_c_message_free_unpacked(&missing->base, NULL);
    if (rc != FC_EXIT_OK)
        return rc;

    Printfarm__V1__PutBundleRequest pb = PRINTFARM__V1__PUT_BUNDLE_REQUEST__INIT;
    pb.bundle = (Printfarm__V1__Bundle *)manifest(lb);
    Printfarm__V1__PutBundleResponse *pr = NULL;
    if (pf_rpc_unary(ch, "/printfarm.v1.Files/PutBundle", &pb.base,
                     &printfarm__v1__put_bundle_response__descriptor, (ProtobufCMessage **)&pr,
                     ctx->cfg.timeout_ms, &err) != PF_OK)
        return fc_report(ctx, "pf-files", target, &err);
    snprintf(bundle_hex, PF_DIGEST_HEX_LEN + 1, "%s",
             pr->digest != NULL && pr->digest->sha256 != NULL ? pr->digest->sha256 : "");
    protobuf_c_message_free_unpacked(&pr->base, NULL);
    return FC_EXIT_OK;
}

int fc_cmd_submit(struct fc_ctx *ctx, int argc, char **argv)
{
    static struct local_bundle lb;
    struct submit_opts o = {.count = 1};
    int first, rc;
    if (!fc_parse(ctx, &cmd_submit, argc, argv, submit_opt, &o, &first, &rc))
        return rc;
    if (argc - first != 1)
        return fc_usage(&cmd_submit, argc - first == 0
                                         ? "missing FILE (a .gcode file or a bundle)"
                                         : "one FILE only (make a bundle for several profiles)");
    const char *path = argv[first];

    /* A bundle file or a gcode file? */
    void *peek = NULL;
    size_t peek_len = 0;
    if ((rc = map_file(path, &peek, &peek_len)) != FC_EXIT_OK)
        return rc;
    bool bundle = peek != NULL && is_tar(peek, peek_len);
    if (peek != NULL)
        munmap(peek, peek_len);

    memset(&lb, 0, sizeof(lb));
    if (bundle) {
        if ((rc = read_bundle(path, &lb)) != FC_EXIT_OK)
            goto out;
        for (size_t i = 0; i < o.n_profiles; i++) {
            bool found = false;
            for (size_t k = 0; k < lb.n; k++)
                found = found || strcmp(lb.files[k].profile, o.profiles[i]) == 0;
            if (!found) {
                rc = fc_usage(&cmd_submit, "bundle '%s' has no gcode for profile '%s'", path,
                              o.profiles[i]);
                goto out;
            }
        }
    } else {
        if (o.n_profiles != 1) {
            rc = fc_usage(&cmd_submit,
                          "a single gcode file needs --profile NAME: the printer profile it was "
                          "sliced for (or build a bundle with farmctl bundle create)");
            goto out;
        }
        stem(path, lb.name, sizeof(lb.name));
        if (lb.name[0] == '\0')
            snprintf(lb.name, sizeof(lb.name), "print");
        if ((rc = add_gcode(&lb, o.profiles[0], path)) != FC_EXIT_OK)
            goto out;
        o.n_profiles = 0; /* the bundle has only that profile */
        finish_manifest(&lb);
    }
    if (o.material != NULL) {
        for (size_t i = 0; i < lb.n; i++) {
            const char *m = lb.files[i].meta.material;
            if (!bundle && m[0] != '\0' && strcasecmp(m, o.material) != 0)
                fc_warn("'%s' was sliced for %s, but the job asks for %s", lb.files[i].path, m,
                        o.material);
        }
    }

    char bundle_hex[PF_DIGEST_HEX_LEN + 1];
    size_t uploaded = 0;
    uint64_t uploaded_bytes = 0;
    if ((rc = store_bundle(ctx, &lb, bundle_hex, &uploaded, &uploaded_bytes)) != FC_EXIT_OK)
        goto out;
    if (!ctx->cfg.json) {
        char sz[32];
        fprintf(stderr, "farmctl: uploaded %zu of %zu file(s) (%s); bundle %.12s…\n", uploaded,
                lb.n, fc_fmt_size(uploaded_bytes, sz, sizeof(sz)), bundle_hex);
    }

    Printfarm__V1__SubmitJobRequest req = PRINTFARM__V1__SUBMIT_JOB_REQUEST__INIT;
    Printfarm__V1__Digest dg = PRINTFARM__V1__DIGEST__INIT;
    Printfarm__V1__JobConstraints cons = PRINTFARM__V1__JOB_CONSTRAINTS__INIT;
    Printfarm__V1__MaterialRequirement mr = PRINTFARM__V1__MATERIAL_REQUIREMENT__INIT;
    Printfarm__V1__MaterialRequirement *mrp = &mr;
    Printfarm__V1__Label lab[LABELS_MAX], *labp[LABELS_MAX];
    char *lab_keys[LABELS_MAX] = {0};
    dg.sha256 = bundle_hex;
    req.bundle = &dg;
    req.queue = (char *)(o.queue ? o.queue : "");
    req.name = (char *)(o.name ? o.name : "");
    req.count = o.count;
    req.priority = o.priority;
    req.idempotency_key = (char *)(o.idem ? o.idem : "");
    req.max_attempts_per_printer = o.max_attempts;
    req.max_printers = o.max_printers;
    req.hold = o.hold;
    if (o.material != NULL || o.colour != NULL || o.have_extruder) {
        mr.material = (char *)(o.material ? o.material : "");
        mr.colour = (char *)(o.colour ? o.colour : "");
        if (o.have_extruder) {
            mr.where_case = PRINTFARM__V1__MATERIAL_REQUIREMENT__WHERE_EXTRUDER;
            mr.extruder = o.extruder;
        }
        cons.n_materials = 1;
        cons.materials = &mrp;
    }
    cons.n_profiles = o.n_profiles;
    cons.profiles = (char **)o.profiles;
    for (size_t i = 0; i < o.n_labels; i++) {
        printfarm__v1__label__init(&lab[i]);
        const char *eq = strchr(o.labels[i], '=');
        lab_keys[i] = eq ? strndup(o.labels[i], (size_t)(eq - o.labels[i])) : strdup(o.labels[i]);
        lab[i].key = lab_keys[i];
        lab[i].value = (char *)(eq ? eq + 1 : "");
        labp[i] = &lab[i];
    }
    cons.n_printer_labels = o.n_labels;
    cons.printer_labels = labp;
    req.constraints = &cons;

    Printfarm__V1__SubmitJobResponse *resp = NULL;
    rc = fc_sched_call(ctx, "/printfarm.v1.Scheduler/SubmitJob", &req.base,
                       &printfarm__v1__submit_job_response__descriptor, (ProtobufCMessage **)&resp);
    for (size_t i = 0; i < o.n_labels; i++)
        free(lab_keys[i]);
    if (rc != FC_EXIT_OK)
        goto out;
    const Printfarm__V1__Job *job = resp->job;
    if (ctx->cfg.json) {
        struct fc_json j;
        fc_json_init(&j, true);
        fc_json_begin_object(&j);
        fc_json_key(&j, "job");
        fc_json_message(&j, job ? &job->base : NULL);
        fc_json_key(&j, "duplicate");
        fc_json_bool(&j, resp->duplicate);
        fc_json_key(&j, "bundle");
        fc_json_string(&j, bundle_hex);
        fc_json_key(&j, "uploaded");
        fc_json_uint(&j, uploaded);
        fc_json_key(&j, "uploaded_bytes");
        fc_json_uint(&j, uploaded_bytes);
        fc_json_end_object(&j);
        rc = fc_json_print(&j, stdout);
    } else if (job != NULL) {
        fprintf(stderr, "farmctl: job %s %s: %u cop%s of '%s', priority %d, queue %s%s\n", job->id,
                resp->duplicate ? "already exists (same idempotency key)" : "queued", job->count,
                job->count == 1 ? "y" : "ies", job->name, job->priority, job->queue,
                job->state == PRINTFARM__V1__JOB_STATE__JOB_STATE_HELD ? " (held)" : "");
        printf("%s\n", job->id);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
out:
    bundle_release(&lb);
    return rc;
}
