/* Fuzz target: the slicer metadata parser (lib/gcode_meta.c) over any bytes
 * as a gcode file, and its duration parser over the first line. Oracles: the
 * parser accepts everything (PF_OK), and what it returns keeps the header's
 * promises: text NUL-terminated, valid UTF-8 without control characters,
 * numbers finite and never negative, found bits consistent with the slicer.
 *
 * An input starting with 0xff is tiled instead: its bytes from offset 2,
 * repeated to just over two windows (byte 1 varies the length), so lines
 * are cut at both window edges and the body between them is skipped, the
 * case a file of ordinary size never reaches. */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "gcode_meta.h"

/* True when s (NUL-terminated within cap bytes) is valid UTF-8 with no C0
 * control characters or DEL. */
static int text_ok(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap)
        return 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k;
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c < 0x80)
            k = 1;
        else if (c >= 0xc2 && c <= 0xdf)
            k = 2;
        else if (c >= 0xe0 && c <= 0xef)
            k = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 4;
        else
            return 0;
        if (i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                return 0;
        }
        i += k;
    }
    return 1;
}

static int amount_ok(double v)
{
    return isfinite(v) && v >= 0;
}

static void parse_and_check(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3 || data[0] != 0xff) {
        parse_and_check(data, size);
        return 0;
    }
    size_t unit = size - 2;
    size_t total = 2 * (size_t)PF_GCODE_META_WINDOW + 1 + (size_t)data[1] * 257;
    uint8_t *tiled = malloc(total);
    FUZZ_CHECK(tiled != NULL);
    for (size_t i = 0; i < total; i += unit)
        memcpy(tiled + i, data + 2, total - i < unit ? total - i : unit);
    parse_and_check(tiled, total);
    free(tiled);
    return 0;
}

static void parse_and_check(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct pf_gcode_meta meta;
    struct pf_error err;
    char label[PF_GCODE_META_NAME_MAX * 2 + 2];

    FUZZ_CHECK(pf_gcode_meta_parse(text, size, &meta, &err) == PF_OK);
    FUZZ_CHECK(text_ok(meta.slicer_name, sizeof(meta.slicer_name)));
    FUZZ_CHECK(text_ok(meta.slicer_version, sizeof(meta.slicer_version)));
    FUZZ_CHECK(text_ok(meta.material, sizeof(meta.material)));
    FUZZ_CHECK(text_ok(meta.colour, sizeof(meta.colour)));
    FUZZ_CHECK(text_ok(meta.printer_model, sizeof(meta.printer_model)));
    FUZZ_CHECK(strnlen(meta.warning, sizeof(meta.warning)) < sizeof(meta.warning));
    FUZZ_CHECK(amount_ok(meta.filament_mm) && amount_ok(meta.filament_g));
    FUZZ_CHECK(amount_ok(meta.nozzle_mm) && amount_ok(meta.layer_height_mm));
    FUZZ_CHECK(amount_ok(meta.first_layer_bed_c) && amount_ok(meta.first_layer_nozzle_c));
    FUZZ_CHECK(meta.slicer < PF_GCODE_SLICER_COUNT);
    FUZZ_CHECK((meta.slicer != PF_GCODE_SLICER_UNKNOWN) ==
               ((meta.found & PF_GCODE_META_SLICER) != 0));
    FUZZ_CHECK(pf_gcode_meta_detect_slicer(text, size) == meta.slicer);
    FUZZ_CHECK(pf_gcode_slicer_name(meta.slicer) != NULL);

    size_t n = pf_gcode_meta_slicer_label(&meta, label, sizeof(label));
    FUZZ_CHECK(n < sizeof(label) && strlen(label) == n && text_ok(label, sizeof(label)));
    FUZZ_CHECK(pf_gcode_meta_slicer_label(&meta, label, 0) == 0);
    FUZZ_CHECK(pf_gcode_meta_slicer_label(&meta, label, 1) == 0 && label[0] == '\0');

    /* The first line as a duration (text[0..len), not NUL-terminated): either
     * parses or is refused cleanly. */
    const char *nl = memchr(text, '\n', size);
    size_t line = nl != NULL ? (size_t)(nl - text) : size;
    uint32_t seconds = 12345;
    enum pf_status rc = pf_gcode_meta_parse_duration(text, line, &seconds, NULL);
    FUZZ_CHECK(rc == PF_OK || rc == PF_E_INVALID || rc == PF_E_OUT_OF_RANGE);
    if (rc != PF_OK)
        FUZZ_CHECK(seconds == 12345);
}
