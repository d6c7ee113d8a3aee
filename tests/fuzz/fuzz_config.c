/* Fuzz target: configuration parsing (lib/config.c): command-line flags and
 * their PRINTFARM_* environment twins through pf_config_parse, with a flag
 * table holding every flag type, and the value parsers on their own. The
 * input is split at NUL bytes into words: a word starting with 0x01 is an
 * environment variable "NAME=VALUE" (set as PRINTFARM_NAME for the call and
 * removed after), every other word is an argument.
 *
 * Oracles: the result is PF_OK, PF_E_END (--help) or PF_E_INVALID with a
 * message; on PF_OK every value is within its flag's range, on failure no
 * destination was written; every word the value parsers accept is in range. */
#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

#define WORDS_MAX 32
#define ENV_MAX   8

struct values {
    char *listen;
    char *token;
    int64_t port;
    bool verbose;
    uint64_t size;
    int64_t timeout_ms;
};

static void value_parsers(const char *word)
{
    uint64_t size;
    int64_t ms;
    char host[256];
    int port = -1;
    struct pf_error err;

    enum pf_status rc = pf_config_parse_size(word, &size);
    FUZZ_CHECK(rc == PF_OK || rc == PF_E_INVALID || rc == PF_E_OUT_OF_RANGE);
    rc = pf_config_parse_duration_ms(word, &ms);
    FUZZ_CHECK(rc == PF_OK || rc == PF_E_INVALID || rc == PF_E_OUT_OF_RANGE);
    if (rc == PF_OK)
        FUZZ_CHECK(ms >= 0);
    if (pf_config_parse_hostport(word, host, sizeof(host), &port, &err) == PF_OK)
        FUZZ_CHECK(port >= 0 && port <= 65535 && strlen(host) < sizeof(host));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct values v = {.port = -7, .size = 7, .timeout_ms = -7};
    const struct pf_flag flags[] = {
        {"listen", PF_FLAG_STRING, &v.listen, "127.0.0.1:0", "gRPC address", 0, 0},
        {"token", PF_FLAG_STRING, &v.token, NULL, "bearer token", 0, 0},
        {"port", PF_FLAG_INT, &v.port, "7400", "a port", 1, 65535},
        {"verbose", PF_FLAG_BOOL, &v.verbose, "false", "say more", 0, 0},
        {"max-size", PF_FLAG_SIZE, &v.size, "1M", "largest blob", 1, 1 << 30},
        {"timeout", PF_FLAG_DURATION_MS, &v.timeout_ms, "5s", "deadline", 0, 3600000},
    };
    const struct pf_config cfg = {"pf-fuzz", "fuzzing the flag parser", flags,
                                  sizeof(flags) / sizeof(flags[0])};
    char *words[WORDS_MAX + 1], *env_names[ENV_MAX];
    int argc = 1, n_env = 0;
    struct pf_error err;

    words[0] = fuzz_strndup((const uint8_t *)"pf-fuzz", 7);
    for (size_t i = 0; i < size && argc < WORDS_MAX;) {
        const uint8_t *nul = memchr(data + i, '\0', size - i);
        size_t len = nul != NULL ? (size_t)(nul - (data + i)) : size - i;
        char *word = fuzz_strndup(data + i, len);
        i += len + 1;
        value_parsers(word);
        char *eq = strchr(word, '=');
        if (word[0] == 0x01 && eq != NULL && n_env < ENV_MAX) {
            char name[96];
            *eq = '\0';
            snprintf(name, sizeof(name), "PRINTFARM_%.80s", word + 1);
            if (setenv(name, eq + 1, 1) == 0)
                env_names[n_env++] = fuzz_strndup((const uint8_t *)name, strlen(name));
            free(word);
            continue;
        }
        words[argc++] = word;
    }
    words[argc] = NULL;

    FILE *out = fopen("/dev/null", "w");
    FUZZ_CHECK(out != NULL);
    enum pf_status rc = pf_config_parse(&cfg, argc, words, out, NULL, &err);
    fclose(out);
    if (rc == PF_OK) {
        FUZZ_CHECK(v.listen != NULL);
        FUZZ_CHECK(v.port >= 1 && v.port <= 65535);
        FUZZ_CHECK(v.size >= 1 && v.size <= (1u << 30));
        FUZZ_CHECK(v.timeout_ms >= 0 && v.timeout_ms <= 3600000);
        pf_config_release(&cfg);
        FUZZ_CHECK(v.listen == NULL && v.token == NULL);
    } else {
        FUZZ_CHECK(rc == PF_E_END || rc == PF_E_INVALID);
        if (rc == PF_E_INVALID)
            FUZZ_CHECK(err.msg[0] != '\0');
        FUZZ_CHECK(v.listen == NULL && v.token == NULL && v.port == -7 && v.size == 7 &&
                   v.timeout_ms == -7);
    }
    for (int i = 0; i < n_env; i++) {
        unsetenv(env_names[i]);
        free(env_names[i]);
    }
    for (int i = 0; i < argc; i++)
        free(words[i]);
    return 0;
}
