/* Fuzz target: the LAN beacon parser of lib/discovery_client.c, over any
 * datagram, and its formatter over any farm name and address (the input cut
 * at its first NUL). Oracles: a parsed beacon holds a valid farm name and a
 * NUL-terminated address, formats back to a payload that parses to the same
 * fields, and gives a dial address; whatever the formatter writes parses
 * back to what it was given. */
#include <string.h>

#include "discovery_client.h"
#include "fuzz.h"

static void check_round_trip(const char *farm, const char *discovery)
{
    char payload[PF_BEACON_MAX_BYTES];
    size_t len = 0;
    struct pf_beacon b;
    struct pf_error err;

    if (pf_beacon_format(farm, discovery, payload, sizeof(payload), &len, &err) != PF_OK) {
        FUZZ_CHECK(err.code == PF_E_INVALID);
        return;
    }
    FUZZ_CHECK(len <= PF_BEACON_MAX_BYTES);
    FUZZ_CHECK(pf_beacon_parse(payload, len, &b, &err) == PF_OK);
    FUZZ_CHECK(b.version == PF_BEACON_VERSION);
    FUZZ_CHECK(strcmp(b.farm, farm) == 0 && strcmp(b.discovery, discovery) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pf_beacon b;
    struct pf_error err;
    char dial[PF_BEACON_ADDR_MAX];

    memset(&b, 0x5a, sizeof(b));
    enum pf_status rc = pf_beacon_parse(data, size, &b, &err);
    if (rc == PF_OK) {
        FUZZ_CHECK(b.version == PF_BEACON_VERSION);
        FUZZ_CHECK(pf_beacon_farm_valid(b.farm));
        FUZZ_CHECK(strnlen(b.discovery, sizeof(b.discovery)) < sizeof(b.discovery));
        check_round_trip(b.farm, b.discovery);
        pf_beacon_dial_address(&b, "192.0.2.7", dial, sizeof(dial));
        FUZZ_CHECK(dial[0] != '\0' && strnlen(dial, sizeof(dial)) < sizeof(dial));
        pf_beacon_dial_address(&b, NULL, dial, sizeof(dial));
        FUZZ_CHECK(strnlen(dial, sizeof(dial)) < sizeof(dial));
    } else {
        FUZZ_CHECK(rc == PF_E_INVALID || rc == PF_E_UNIMPLEMENTED);
        FUZZ_CHECK(err.msg[0] != '\0');
        FUZZ_CHECK(((unsigned char *)&b)[0] == 0x5a); /* out written only on PF_OK */
    }

    /* The formatter: farm name before the first NUL, address after it. */
    const uint8_t *nul = memchr(data, '\0', size);
    if (nul != NULL) {
        char *farm = fuzz_strndup(data, (size_t)(nul - data));
        char *discovery = fuzz_strndup(nul + 1, size - (size_t)(nul - data) - 1);
        check_round_trip(farm, discovery);
        free(farm);
        free(discovery);
    }
    return 0;
}
