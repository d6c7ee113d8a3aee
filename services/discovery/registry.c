/* pf-discovery's registry in Redis: the Lua scripts, their calls (EVALSHA,
 * falling back to EVAL once after Redis forgot them) and the decoding of
 * their replies into printfarm.v1 messages. The data model is described in
 * registry.h. */
#include "registry.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "log.h"
#include "timeutil.h"

#define POOL_DEFAULT       4
#define GRACE_DEFAULT_MS   60000
#define EVENTS_MAX_DEFAULT 20000
#define PROBE_BATCH        150
#define WHY_MAX            PF_ERROR_MSG_MAX
#define COUNT(a)           (sizeof(a) / sizeof((a)[0]))

/* ---- the scripts ---- */

/* Shared by every script: Redis' clock, integer formatting, the public
 * fields of an entry (all but the lease id) and appending an event. */
#define PRELUDE                                                                                    \
    "local function now_ms()\n"                                                                    \
    "  local t = redis.call('TIME')\n"                                                             \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                         \
    "end\n"                                                                                        \
    "local function s(n) return string.format('%d', n) end\n"                                      \
    "local function public(key)\n"                                                                 \
    "  local all = redis.call('HGETALL', key)\n"                                                   \
    "  local out = {}\n"                                                                           \
    "  for i = 1, #all, 2 do\n"                                                                    \
    "    if all[i] ~= 'lease' then\n"                                                              \
    "      out[#out + 1] = all[i]\n"                                                               \
    "      out[#out + 1] = all[i + 1]\n"                                                           \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return out\n"                                                                               \
    "end\n"                                                                                        \
    "local function emit(stream, ver, maxlen, typ, member, fields)\n"                              \
    "  local v = redis.call('INCR', ver)\n"                                                        \
    "  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 't', typ, 'm', member,\n"            \
    "             'v', v, unpack(fields))\n"                                                       \
    "end\n"

/* KEYS: hash index stream version probeset. ARGV: member kind id inst addr pm
 * lease ttl_ms grace_ms maxlen. Returns {exp, event type or 0}. An entry whose
 * lease ran out but was not reaped yet is removed first (REMOVED, then
 * ADDED). The last probe is kept when address and probe mode are unchanged. */
static const char script_register[] =
    PRELUDE "local now = now_ms()\n"
            "local ttl = tonumber(ARGV[8])\n"
            "local exp = now + ttl\n"
            "local old = redis.call('HMGET', KEYS[1], 'exp', 'inst', 'addr', 'pm', 'h', 'lat', "
            "'pt', 'pe')\n"
            "local existed = false\n"
            "if old[1] then\n"
            "  if tonumber(old[1]) > now then\n"
            "    existed = true\n"
            "  else\n"
            "    emit(KEYS[3], KEYS[4], ARGV[10], '3', ARGV[1], public(KEYS[1]))\n"
            "    redis.call('DEL', KEYS[1])\n"
            "  end\n"
            "end\n"
            "local h, lat, pt, pe = '1', '0', '0', ''\n"
            "if existed and old[3] == ARGV[5] and old[4] == ARGV[6] then\n"
            "  h, lat, pt, pe = old[5] or '1', old[6] or '0', old[7] or '0', old[8] or ''\n"
            "end\n"
            "redis.call('HSET', KEYS[1], 'k', ARGV[2], 'id', ARGV[3], 'inst', ARGV[4], 'addr', "
            "ARGV[5], 'pm', ARGV[6], 'lease', ARGV[7], 'ttl', s(ttl), 'reg', s(now), 'seen', "
            "s(now), 'exp', s(exp), 'h', h, 'lat', lat, 'pt', pt, 'pe', pe)\n"
            "redis.call('PEXPIRE', KEYS[1], s(ttl + tonumber(ARGV[9])))\n"
            "redis.call('ZADD', KEYS[2], s(exp), ARGV[1])\n"
            "if ARGV[6] == 'off' then redis.call('SREM', KEYS[5], ARGV[1])\n"
            "else redis.call('SADD', KEYS[5], ARGV[1]) end\n"
            "local typ = 0\n"
            "if not existed then typ = 1\n"
            "elseif old[2] ~= ARGV[4] or old[3] ~= ARGV[5] or old[4] ~= ARGV[6] then typ = 2 end\n"
            "if typ ~= 0 then\n"
            "  emit(KEYS[3], KEYS[4], ARGV[10], s(typ), ARGV[1], public(KEYS[1]))\n"
            "end\n"
            "return {exp, typ}\n";

/* KEYS: index. ARGV: grace_ms prefix, then (member, lease) pairs. Returns
 * {exp, ttl, exp, ttl, ...} in order, {-1, 0} for a lease that is not
 * current. One round trip for a whole batch of heartbeats; one ZADD for all. */
static const char script_heartbeat[] =
    PRELUDE "local now = now_ms()\n"
            "local grace = tonumber(ARGV[1])\n"
            "local out, scores = {}, {}\n"
            "for i = 3, #ARGV, 2 do\n"
            "  local m, lease = ARGV[i], ARGV[i + 1]\n"
            "  local key = ARGV[2] .. m\n"
            "  local h = redis.call('HMGET', key, 'lease', 'ttl', 'exp')\n"
            "  if not h[1] or h[1] ~= lease or tonumber(h[3]) <= now then\n"
            "    out[#out + 1] = -1\n"
            "    out[#out + 1] = 0\n"
            "  else\n"
            "    local ttl = tonumber(h[2])\n"
            "    local exp = now + ttl\n"
            "    redis.call('HSET', key, 'seen', s(now), 'exp', s(exp))\n"
            "    redis.call('PEXPIRE', key, s(ttl + grace))\n"
            "    scores[#scores + 1] = s(exp)\n"
            "    scores[#scores + 1] = m\n"
            "    out[#out + 1] = exp\n"
            "    out[#out + 1] = ttl\n"
            "  end\n"
            "end\n"
            "if #scores > 0 then redis.call('ZADD', KEYS[1], unpack(scores)) end\n"
            "return out\n";

/* KEYS: hash index stream version probeset. ARGV: lease member maxlen.
 * Returns 1 when removed. */
static const char script_deregister[] =
    PRELUDE "local l = redis.call('HGET', KEYS[1], 'lease')\n"
            "if not l or l ~= ARGV[1] then return 0 end\n"
            "emit(KEYS[3], KEYS[4], ARGV[3], '3', ARGV[2], public(KEYS[1]))\n"
            "redis.call('DEL', KEYS[1])\n"
            "redis.call('ZREM', KEYS[2], ARGV[2])\n"
            "redis.call('SREM', KEYS[5], ARGV[2])\n"
            "return 1\n";

/* KEYS: index stream version probeset. ARGV: prefix limit maxlen. Returns how
 * many entries it removed. */
static const char script_reap[] =
    PRELUDE "local now = now_ms()\n"
            "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', s(now), 'LIMIT', 0, "
            "tonumber(ARGV[2]))\n"
            "local removed = 0\n"
            "for _, m in ipairs(due) do\n"
            "  local key = ARGV[1] .. m\n"
            "  local exp = redis.call('HGET', key, 'exp')\n"
            "  if exp and tonumber(exp) > now then\n"
            "    redis.call('ZADD', KEYS[1], exp, m)\n"
            "  else\n"
            "    emit(KEYS[2], KEYS[3], ARGV[3], '3', m, public(key))\n"
            "    redis.call('DEL', key)\n"
            "    redis.call('ZREM', KEYS[1], m)\n"
            "    redis.call('SREM', KEYS[4], m)\n"
            "    removed = removed + 1\n"
            "  end\n"
            "end\n"
            "return removed\n";

/* KEYS: index stream version. ARGV: prefix member-prefix ('' = all). Returns
 * {last stream id, version, now, {fields...}...} at one instant. */
static const char script_snapshot[] =
    PRELUDE "local now = now_ms()\n"
            "local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. s(now), '+inf')\n"
            "local out = {}\n"
            "local pfx = ARGV[2]\n"
            "for _, m in ipairs(members) do\n"
            "  if pfx == '' or string.sub(m, 1, #pfx) == pfx then\n"
            "    local f = public(ARGV[1] .. m)\n"
            "    if #f > 0 then out[#out + 1] = f end\n"
            "  end\n"
            "end\n"
            "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
            "local id = '0-0'\n"
            "if last[1] then id = last[1][1] end\n"
            "local v = redis.call('GET', KEYS[3]) or '0'\n"
            "return {id, v, now, out}\n";

/* KEYS: hash. Returns the public fields, or nil when absent or expired. */
static const char script_get[] =
    PRELUDE "local now = now_ms()\n"
            "local exp = redis.call('HGET', KEYS[1], 'exp')\n"
            "if not exp or tonumber(exp) <= now then return false end\n"
            "return public(KEYS[1])\n";

/* KEYS: probeset. ARGV: prefix. Returns {member, address, probe mode, ...}
 * of the live entries that are probed (probe=off ones are not in the set). */
static const char script_targets[] =
    PRELUDE "local now = now_ms()\n"
            "local members = redis.call('SMEMBERS', KEYS[1])\n"
            "local out = {}\n"
            "for _, m in ipairs(members) do\n"
            "  local f = redis.call('HMGET', ARGV[1] .. m, 'addr', 'pm', 'exp')\n"
            "  if f[1] and f[3] and tonumber(f[3]) > now then\n"
            "    out[#out + 1] = m\n"
            "    out[#out + 1] = f[1]\n"
            "    out[#out + 1] = f[2] or 'grpc'\n"
            "  end\n"
            "end\n"
            "return out\n";

/* KEYS: stream version. ARGV: prefix maxlen n, then n times: member address
 * health latency error. Records each result whose entry is live and still
 * has that address; a changed health adds a CHANGED event. Returns how many
 * changed. */
static const char script_probes[] =
    PRELUDE "local now = now_ms()\n"
            "local changed = 0\n"
            "local n = tonumber(ARGV[3])\n"
            "for i = 0, n - 1 do\n"
            "  local b = 4 + i * 5\n"
            "  local m = ARGV[b]\n"
            "  local key = ARGV[1] .. m\n"
            "  local cur = redis.call('HMGET', key, 'exp', 'addr', 'h')\n"
            "  if cur[1] and tonumber(cur[1]) > now and cur[2] == ARGV[b + 1] then\n"
            "    redis.call('HSET', key, 'h', ARGV[b + 2], 'lat', ARGV[b + 3], 'pt', s(now), "
            "'pe', ARGV[b + 4])\n"
            "    if cur[3] ~= ARGV[b + 2] then\n"
            "      emit(KEYS[1], KEYS[2], ARGV[2], '2', m, public(key))\n"
            "      changed = changed + 1\n"
            "    end\n"
            "  end\n"
            "end\n"
            "return changed\n";

enum script_id {
    S_REGISTER,
    S_HEARTBEAT,
    S_DEREGISTER,
    S_REAP,
    S_SNAPSHOT,
    S_GET,
    S_TARGETS,
    S_PROBES,
    S_COUNT
};

static const struct {
    const char *name;
    const char *text;
} scripts[S_COUNT] = {
    [S_REGISTER] = {"register", script_register},
    [S_HEARTBEAT] = {"heartbeat", script_heartbeat},
    [S_DEREGISTER] = {"deregister", script_deregister},
    [S_REAP] = {"reap", script_reap},
    [S_SNAPSHOT] = {"snapshot", script_snapshot},
    [S_GET] = {"get", script_get},
    [S_TARGETS] = {"probe_targets", script_targets},
    [S_PROBES] = {"probe_record", script_probes},
};

/* ---- the registry and its connections ---- */

struct pf_registry_conn {
    struct pf_registry *reg;
    struct pf_redis *redis; /* NULL until connected */
    int command_timeout_ms;
    bool pooled;
    struct pf_registry_conn *next_free;
};

struct pf_registry {
    char *url;
    char target[280];
    char sha[S_COUNT][41];
    int64_t grace_ms;
    char maxlen[24];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pf_registry_conn *pool;
    int pool_size;
    struct pf_registry_conn *free_list; /* under mu */
    atomic_bool redis_ok;
    pthread_mutex_t why_mu;
    char why[WHY_MAX]; /* under why_mu */
    struct pf_metric *m_unavailable;
};

static void sha1_hex(const char *text, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";
    EVP_Digest(text, strlen(text), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < n && i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
}

enum pf_status pf_registry_create(const struct pf_registry_opts *opts, struct pf_registry **out,
                                  struct pf_error *err)
{
    struct pf_redis_url url;
    struct pf_registry *reg;
    enum pf_status rc;

    *out = NULL;
    rc = pf_redis_url_parse(opts->redis_url, &url, err);
    if (rc != PF_OK)
        return rc;
    reg = calloc(1, sizeof(*reg));
    if (reg == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    reg->url = strdup(opts->redis_url);
    reg->pool_size = opts->pool_size > 0 ? opts->pool_size : POOL_DEFAULT;
    reg->pool = calloc((size_t)reg->pool_size, sizeof(*reg->pool));
    if (reg->url == NULL || reg->pool == NULL) {
        free(reg->url);
        free(reg->pool);
        free(reg);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    snprintf(reg->target, sizeof(reg->target), "%s%s%s:%d", strchr(url.host, ':') ? "[" : "",
             url.host, strchr(url.host, ':') ? "]" : "", url.port);
    memset(&url, 0, sizeof(url));
    for (int i = 0; i < S_COUNT; i++)
        sha1_hex(scripts[i].text, reg->sha[i]);
    reg->grace_ms = opts->grace_ms > 0 ? opts->grace_ms : GRACE_DEFAULT_MS;
    snprintf(reg->maxlen, sizeof(reg->maxlen), "%ld",
             opts->events_max > 0 ? opts->events_max : EVENTS_MAX_DEFAULT);
    pthread_mutex_init(&reg->mu, NULL);
    pthread_cond_init(&reg->cv, NULL);
    pthread_mutex_init(&reg->why_mu, NULL);
    atomic_init(&reg->redis_ok, false);
    snprintf(reg->why, sizeof(reg->why), "redis at %.200s not contacted yet", reg->target);
    for (int i = 0; i < reg->pool_size; i++) {
        reg->pool[i].reg = reg;
        reg->pool[i].pooled = true;
        reg->pool[i].command_timeout_ms = 0;
        reg->pool[i].next_free = reg->free_list;
        reg->free_list = &reg->pool[i];
    }
    reg->m_unavailable =
        pf_metrics_counter(opts->metrics, "printfarm_discovery_redis_unavailable_total",
                           "registry operations that failed because Redis was unreachable", NULL);
    *out = reg;
    return PF_OK;
}

void pf_registry_destroy(struct pf_registry *reg)
{
    if (reg == NULL)
        return;
    for (int i = 0; i < reg->pool_size; i++)
        pf_redis_destroy(reg->pool[i].redis);
    free(reg->pool);
    pthread_mutex_destroy(&reg->why_mu);
    pthread_cond_destroy(&reg->cv);
    pthread_mutex_destroy(&reg->mu);
    free(reg->url);
    free(reg);
}

struct pf_registry_conn *pf_registry_conn_get(struct pf_registry *reg)
{
    struct pf_registry_conn *c;
    pthread_mutex_lock(&reg->mu);
    while (reg->free_list == NULL)
        pthread_cond_wait(&reg->cv, &reg->mu);
    c = reg->free_list;
    reg->free_list = c->next_free;
    pthread_mutex_unlock(&reg->mu);
    return c;
}

void pf_registry_conn_put(struct pf_registry_conn *conn)
{
    struct pf_registry *reg;
    if (conn == NULL)
        return;
    reg = conn->reg;
    pthread_mutex_lock(&reg->mu);
    conn->next_free = reg->free_list;
    reg->free_list = conn;
    pthread_cond_signal(&reg->cv);
    pthread_mutex_unlock(&reg->mu);
}

struct pf_registry_conn *pf_registry_conn_create(struct pf_registry *reg, int command_timeout_ms)
{
    struct pf_registry_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->reg = reg;
    c->command_timeout_ms = command_timeout_ms;
    return c;
}

void pf_registry_conn_destroy(struct pf_registry_conn *conn)
{
    if (conn == NULL)
        return;
    pf_redis_destroy(conn->redis);
    free(conn);
}

bool pf_registry_redis_ok(struct pf_registry *reg, char *why, size_t why_size)
{
    bool ok = atomic_load(&reg->redis_ok);
    if (!ok && why != NULL && why_size > 0) {
        pthread_mutex_lock(&reg->why_mu);
        snprintf(why, why_size, "%s", reg->why);
        pthread_mutex_unlock(&reg->why_mu);
    }
    return ok;
}

const char *pf_registry_redis_target(const struct pf_registry *reg)
{
    return reg->target;
}

/* Records whether Redis answered, for /readyz and the logs. */
static void note(struct pf_registry *reg, enum pf_status rc, const struct pf_error *err)
{
    if (rc == PF_E_UNAVAILABLE) {
        pf_metric_add(reg->m_unavailable, NULL, 1);
        pthread_mutex_lock(&reg->why_mu);
        snprintf(reg->why, sizeof(reg->why), "%s", err->msg);
        pthread_mutex_unlock(&reg->why_mu);
        if (atomic_exchange(&reg->redis_ok, false))
            pf_log_warn("redis_unavailable", "error=\"%s\"", err->msg);
    } else if (rc == PF_OK || rc == PF_E_NOT_FOUND) {
        if (!atomic_exchange(&reg->redis_ok, true))
            pf_log_info("redis_available", "target=%s", reg->target);
    }
}

static enum pf_status ensure_redis(struct pf_registry_conn *conn, struct pf_error *err)
{
    struct pf_redis_options ro = {.connect_timeout_ms = 1000,
                                  .command_timeout_ms = conn->command_timeout_ms};
    enum pf_status rc;
    if (conn->redis != NULL)
        return PF_OK;
    rc = pf_redis_create(conn->reg->url, &ro, &conn->redis, err);
    if (rc != PF_OK)
        note(conn->reg, rc, err);
    return rc;
}

struct pf_redis *pf_registry_conn_redis(struct pf_registry_conn *conn, struct pf_error *err)
{
    return ensure_redis(conn, err) == PF_OK ? conn->redis : NULL;
}

/* Runs a script: EVALSHA, or EVAL when Redis does not know it (after a
 * restart). argv[0..1] are filled here; the caller fills argv[2..] (numkeys,
 * keys, arguments) and lens (NULL entries: strlen). */
static enum pf_status run_script(struct pf_registry_conn *conn, enum script_id id, int argc,
                                 const char **argv, size_t *lens, redisReply **reply,
                                 struct pf_error *err)
{
    struct pf_registry *reg = conn->reg;
    enum pf_status rc = ensure_redis(conn, err);
    if (rc != PF_OK)
        return rc;
    for (int i = 2; i < argc; i++) {
        if (lens[i] == (size_t)-1)
            lens[i] = strlen(argv[i]);
    }
    argv[0] = "EVALSHA";
    argv[1] = reg->sha[id];
    lens[0] = 7;
    lens[1] = 40;
    rc = pf_redis_command(conn->redis, argc, argv, lens, reply, err);
    if (rc == PF_E_NOT_FOUND) { /* NOSCRIPT: Redis restarted or flushed its scripts */
        argv[0] = "EVAL";
        argv[1] = scripts[id].text;
        lens[0] = 4;
        lens[1] = strlen(scripts[id].text);
        rc = pf_redis_command(conn->redis, argc, argv, lens, reply, err);
    }
    if (rc != PF_OK && rc != PF_E_UNAVAILABLE)
        pf_log_warn("redis_script_failed", "script=%s error=\"%s\"", scripts[id].name, err->msg);
    note(reg, rc, err);
    return rc;
}

/* ---- decoding ---- */

static long long reply_ll(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
        return strtoll(r->str, NULL, 10);
    return 0;
}

static bool is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* The value of field name in a flat field/value array starting at elems. */
static const redisReply *field(redisReply *const *elems, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (is_str(elems[i]) && elems[i]->len == len && memcmp(elems[i]->str, name, len) == 0)
            return elems[i + 1];
    }
    return NULL;
}

void pf_registry_status_free(Printfarm__V1__InstanceStatus *st)
{
    if (st == NULL)
        return;
    if (st->instance != NULL)
        protobuf_c_message_free_unpacked(&st->instance->base, NULL);
    free(st->probe_error);
    free(st);
}

/* An Instance naming only kind and id, allocated as unpacked messages are
 * (so pf_registry_status_free frees both kinds alike). */
static Printfarm__V1__Instance *bare_instance(int kind, const char *id)
{
    Printfarm__V1__Instance inst = PRINTFARM__V1__INSTANCE__INIT;
    uint8_t buf[PF_DISC_ID_MAX + 32];
    size_t n;
    inst.kind = (Printfarm__V1__InstanceKind)kind;
    inst.id = (char *)id;
    n = printfarm__v1__instance__pack(&inst, buf);
    return printfarm__v1__instance__unpack(NULL, n, buf);
}

/* Builds an InstanceStatus from an entry's public fields; member (may be
 * NULL) names it when the fields are gone (an entry Redis expired). NULL when
 * out of memory or nothing identifies the entry. */
static Printfarm__V1__InstanceStatus *status_from_fields(redisReply *const *elems, size_t n,
                                                         const redisReply *member)
{
    Printfarm__V1__InstanceStatus *st = calloc(1, sizeof(*st));
    const redisReply *inst = field(elems, n, "inst");
    const redisReply *pe = field(elems, n, "pe");

    if (st == NULL)
        return NULL;
    printfarm__v1__instance_status__init(st);
    if (is_str(inst))
        st->instance = printfarm__v1__instance__unpack(NULL, inst->len, (const uint8_t *)inst->str);
    if (st->instance == NULL && is_str(member)) {
        int kind;
        char id[PF_DISC_ID_MAX + 1];
        if (pf_disc_member_parse(member->str, member->len, &kind, id, sizeof(id)))
            st->instance = bare_instance(kind, id);
    }
    st->probe_error = strdup(is_str(pe) ? pe->str : "");
    if (st->instance == NULL || st->probe_error == NULL) {
        pf_registry_status_free(st);
        return NULL;
    }
    st->health = (Printfarm__V1__InstanceHealth)reply_ll(field(elems, n, "h"));
    if (st->health == PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_UNSPECIFIED)
        st->health = PRINTFARM__V1__INSTANCE_HEALTH__INSTANCE_HEALTH_UNKNOWN;
    st->latency_us = (uint32_t)reply_ll(field(elems, n, "lat"));
    st->last_seen_unix_ms = reply_ll(field(elems, n, "seen"));
    st->last_probe_unix_ms = reply_ll(field(elems, n, "pt"));
    st->expires_unix_ms = reply_ll(field(elems, n, "exp"));
    st->registered_unix_ms = reply_ll(field(elems, n, "reg"));
    return st;
}

static int status_cmp(const void *a, const void *b)
{
    const Printfarm__V1__InstanceStatus *x = *(Printfarm__V1__InstanceStatus *const *)a;
    const Printfarm__V1__InstanceStatus *y = *(Printfarm__V1__InstanceStatus *const *)b;
    if (x->instance->kind != y->instance->kind)
        return x->instance->kind < y->instance->kind ? -1 : 1;
    return strcmp(x->instance->id, y->instance->id);
}

static enum pf_status bad_reply(const char *script, struct pf_error *err)
{
    return pf_error_set(err, PF_E_INTERNAL, "redis script '%s' returned an unexpected reply",
                        script);
}

/* ---- instances ---- */

static void nonce_hex(char out[PF_DISC_NONCE_LEN + 1])
{
    uint8_t b[PF_DISC_NONCE_LEN / 2];
    static const char hex[] = "0123456789abcdef";
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t t = (uint64_t)pf_time_mono_ms() ^ ((uint64_t)pf_time_wall_ms() << 20);
        memcpy(b, &t, sizeof(b) < sizeof(t) ? sizeof(b) : sizeof(t));
    }
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[PF_DISC_NONCE_LEN] = '\0';
}

enum pf_status pf_registry_register(struct pf_registry_conn *conn,
                                    const Printfarm__V1__Instance *inst,
                                    enum pf_disc_probe_mode mode, int64_t ttl_ms, char *lease,
                                    int64_t *expires_ms, struct pf_error *err)
{
    struct pf_registry *reg = conn->reg;
    char member[PF_DISC_MEMBER_MAX], key[sizeof(PF_DISC_KEY_INSTANCE_PREFIX) + PF_DISC_MEMBER_MAX];
    char kind[8], ttl[24], grace[24], nonce[PF_DISC_NONCE_LEN + 1];
    size_t packed_len = printfarm__v1__instance__get_packed_size(inst);
    uint8_t *packed = malloc(packed_len + 1);
    redisReply *reply = NULL;
    enum pf_status rc;

    if (packed == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    printfarm__v1__instance__pack(inst, packed);
    pf_disc_member((int)inst->kind, inst->id, member, sizeof(member));
    snprintf(key, sizeof(key), "%s%s", PF_DISC_KEY_INSTANCE_PREFIX, member);
    snprintf(kind, sizeof(kind), "%d", (int)inst->kind);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)ttl_ms);
    snprintf(grace, sizeof(grace), "%lld", (long long)reg->grace_ms);
    nonce_hex(nonce);
    pf_disc_lease_format((int)inst->kind, inst->id, nonce, lease, PF_DISC_LEASE_MAX);

    const char *argv[] = {NULL,
                          NULL,
                          "5",
                          key,
                          PF_DISC_KEY_INDEX,
                          PF_DISC_KEY_EVENTS,
                          PF_DISC_KEY_VERSION,
                          PF_DISC_KEY_PROBES,
                          member,
                          kind,
                          inst->id,
                          (const char *)packed,
                          inst->address,
                          pf_disc_probe_mode_name(mode),
                          lease,
                          ttl,
                          grace,
                          reg->maxlen};
    size_t lens[COUNT(argv)];
    for (size_t i = 0; i < COUNT(argv); i++)
        lens[i] = (size_t)-1;
    lens[11] = packed_len;
    rc = run_script(conn, S_REGISTER, (int)COUNT(argv), argv, lens, &reply, err);
    free(packed);
    if (rc != PF_OK)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        freeReplyObject(reply);
        return bad_reply("register", err);
    }
    *expires_ms = reply_ll(reply->element[0]);
    freeReplyObject(reply);
    return PF_OK;
}

static void instance_key(const char *member, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s%s", PF_DISC_KEY_INSTANCE_PREFIX, member);
}

enum pf_status pf_registry_heartbeat_many(struct pf_registry_conn *conn, struct pf_heartbeat *items,
                                          size_t count, struct pf_error *err)
{
    enum { FIXED = 6 };
    const char **argv;
    size_t *lens;
    char grace[24];
    redisReply *reply = NULL;
    enum pf_status rc;
    int argc = 0;

    if (count == 0)
        return PF_OK;
    if (count > PF_REGISTRY_HEARTBEAT_BATCH)
        return pf_error_set(err, PF_E_INVALID, "at most %d heartbeats per batch",
                            PF_REGISTRY_HEARTBEAT_BATCH);
    argv = malloc((FIXED + 2 * count) * sizeof(*argv));
    lens = malloc((FIXED + 2 * count) * sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    snprintf(grace, sizeof(grace), "%lld", (long long)conn->reg->grace_ms);
    argv[argc++] = NULL;
    argv[argc++] = NULL;
    argv[argc++] = "1";
    argv[argc++] = PF_DISC_KEY_INDEX;
    argv[argc++] = grace;
    argv[argc++] = PF_DISC_KEY_INSTANCE_PREFIX;
    for (size_t i = 0; i < count; i++) {
        argv[argc++] = items[i].member;
        argv[argc++] = items[i].lease;
    }
    for (int i = 0; i < argc; i++)
        lens[i] = (size_t)-1;
    rc = run_script(conn, S_HEARTBEAT, argc, argv, lens, &reply, err);
    free(argv);
    free(lens);
    if (rc != PF_OK)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 * count) {
        freeReplyObject(reply);
        return bad_reply("heartbeat", err);
    }
    for (size_t i = 0; i < count; i++) {
        items[i].expires_ms = reply_ll(reply->element[2 * i]);
        items[i].ttl_ms = reply_ll(reply->element[2 * i + 1]);
        items[i].current = items[i].expires_ms >= 0;
    }
    freeReplyObject(reply);
    return PF_OK;
}

enum pf_status pf_registry_heartbeat(struct pf_registry_conn *conn, const char *member,
                                     const char *lease, int64_t *ttl_ms, int64_t *expires_ms,
                                     struct pf_error *err)
{
    struct pf_heartbeat hb;
    enum pf_status rc;

    memset(&hb, 0, sizeof(hb));
    snprintf(hb.member, sizeof(hb.member), "%s", member);
    snprintf(hb.lease, sizeof(hb.lease), "%s", lease);
    rc = pf_registry_heartbeat_many(conn, &hb, 1, err);
    if (rc != PF_OK)
        return rc;
    *ttl_ms = hb.ttl_ms;
    *expires_ms = hb.expires_ms;
    if (!hb.current)
        return pf_registry_lease_gone(lease, err);
    return PF_OK;
}

enum pf_status pf_registry_lease_gone(const char *lease, struct pf_error *err)
{
    return pf_error_set(err, PF_E_NOT_FOUND,
                        "lease '%.100s' is not current (it expired, or the instance "
                        "registered again): register again",
                        lease);
}

enum pf_status pf_registry_deregister(struct pf_registry_conn *conn, const char *member,
                                      const char *lease, bool *removed, struct pf_error *err)
{
    char key[sizeof(PF_DISC_KEY_INSTANCE_PREFIX) + PF_DISC_MEMBER_MAX];
    redisReply *reply = NULL;
    enum pf_status rc;

    instance_key(member, key, sizeof(key));
    const char *argv[] = {NULL,
                          NULL,
                          "5",
                          key,
                          PF_DISC_KEY_INDEX,
                          PF_DISC_KEY_EVENTS,
                          PF_DISC_KEY_VERSION,
                          PF_DISC_KEY_PROBES,
                          lease,
                          member,
                          conn->reg->maxlen};
    size_t lens[COUNT(argv)];
    for (size_t i = 0; i < COUNT(argv); i++)
        lens[i] = (size_t)-1;
    rc = run_script(conn, S_DEREGISTER, (int)COUNT(argv), argv, lens, &reply, err);
    if (rc != PF_OK)
        return rc;
    if (removed != NULL)
        *removed = reply_ll(reply) == 1;
    freeReplyObject(reply);
    return PF_OK;
}

void pf_registry_snapshot_release(struct pf_registry_snapshot *s)
{
    for (size_t i = 0; i < s->count; i++)
        pf_registry_status_free(s->items[i]);
    free(s->items);
    s->items = NULL;
    s->count = 0;
}

enum pf_status pf_registry_snapshot(struct pf_registry_conn *conn, int kind,
                                    struct pf_registry_snapshot *out, struct pf_error *err)
{
    char pfx[24] = "";
    redisReply *reply = NULL, *list;
    enum pf_status rc;

    memset(out, 0, sizeof(*out));
    if (kind != 0)
        snprintf(pfx, sizeof(pfx), "%s:", pf_disc_kind_name(kind));
    const char *argv[] = {NULL,
                          NULL,
                          "3",
                          PF_DISC_KEY_INDEX,
                          PF_DISC_KEY_EVENTS,
                          PF_DISC_KEY_VERSION,
                          PF_DISC_KEY_INSTANCE_PREFIX,
                          pfx};
    size_t lens[COUNT(argv)];
    for (size_t i = 0; i < COUNT(argv); i++)
        lens[i] = (size_t)-1;
    rc = run_script(conn, S_SNAPSHOT, (int)COUNT(argv), argv, lens, &reply, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 || !is_str(reply->element[0]) ||
        reply->element[3]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply);
        return bad_reply("snapshot", err);
    }
    snprintf(out->stream_id, sizeof(out->stream_id), "%s", reply->element[0]->str);
    out->version = (uint64_t)reply_ll(reply->element[1]);
    out->now_ms = reply_ll(reply->element[2]);
    list = reply->element[3];
    out->items = calloc(list->elements + 1, sizeof(*out->items));
    if (out->items == NULL) {
        freeReplyObject(reply);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *f = list->element[i];
        Printfarm__V1__InstanceStatus *st;
        if (f->type != REDIS_REPLY_ARRAY)
            continue;
        st = status_from_fields(f->element, f->elements, NULL);
        if (st != NULL)
            out->items[out->count++] = st;
    }
    freeReplyObject(reply);
    qsort(out->items, out->count, sizeof(*out->items), status_cmp);
    return PF_OK;
}

enum pf_status pf_registry_get(struct pf_registry_conn *conn, int kind, const char *id,
                               Printfarm__V1__InstanceStatus **out, struct pf_error *err)
{
    char member[PF_DISC_MEMBER_MAX], key[sizeof(PF_DISC_KEY_INSTANCE_PREFIX) + PF_DISC_MEMBER_MAX];
    redisReply *reply = NULL;
    enum pf_status rc;

    *out = NULL;
    pf_disc_member(kind, id, member, sizeof(member));
    instance_key(member, key, sizeof(key));
    const char *argv[] = {NULL, NULL, "1", key};
    size_t lens[COUNT(argv)] = {0, 0, 1, (size_t)-1};
    rc = run_script(conn, S_GET, (int)COUNT(argv), argv, lens, &reply, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return pf_error_set(err, PF_E_NOT_FOUND, "no %s instance '%s' is registered",
                            pf_disc_kind_name(kind), id);
    }
    if (reply->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply);
        return bad_reply("get", err);
    }
    *out = status_from_fields(reply->element, reply->elements, NULL);
    freeReplyObject(reply);
    if (*out == NULL)
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    return PF_OK;
}

enum pf_status pf_registry_scheduler_leader(struct pf_registry_conn *conn, char *out,
                                            size_t out_size, struct pf_error *err)
{
    const char *argv[] = {"GET", PF_DISC_KEY_SCHED_LEADER};
    redisReply *reply = NULL;
    enum pf_status rc = ensure_redis(conn, err);
    if (rc != PF_OK)
        return rc;
    rc = pf_redis_command(conn->redis, 2, argv, NULL, &reply, err);
    note(conn->reg, rc, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return pf_error_set(err, PF_E_NOT_FOUND,
                            "no scheduler leader: the lease '%s' is not held (is pf-scheduler "
                            "running on this redis?)",
                            PF_DISC_KEY_SCHED_LEADER);
    }
    if (reply->type != REDIS_REPLY_STRING || !pf_disc_leader_address(reply->str, out, out_size)) {
        freeReplyObject(reply);
        return pf_error_set(err, PF_E_INTERNAL, "the scheduler lease '%s' holds no address",
                            PF_DISC_KEY_SCHED_LEADER);
    }
    freeReplyObject(reply);
    return PF_OK;
}

enum pf_status pf_registry_reap(struct pf_registry_conn *conn, int limit, size_t *removed,
                                struct pf_error *err)
{
    char lim[16];
    redisReply *reply = NULL;
    enum pf_status rc;

    snprintf(lim, sizeof(lim), "%d", limit > 0 ? limit : 100);
    const char *argv[] = {NULL,
                          NULL,
                          "4",
                          PF_DISC_KEY_INDEX,
                          PF_DISC_KEY_EVENTS,
                          PF_DISC_KEY_VERSION,
                          PF_DISC_KEY_PROBES,
                          PF_DISC_KEY_INSTANCE_PREFIX,
                          lim,
                          conn->reg->maxlen};
    size_t lens[COUNT(argv)];
    for (size_t i = 0; i < COUNT(argv); i++)
        lens[i] = (size_t)-1;
    rc = run_script(conn, S_REAP, (int)COUNT(argv), argv, lens, &reply, err);
    if (rc != PF_OK)
        return rc;
    if (removed != NULL)
        *removed = (size_t)reply_ll(reply);
    freeReplyObject(reply);
    return PF_OK;
}

/* ---- probing ---- */

enum pf_status pf_registry_probe_targets(struct pf_registry_conn *conn,
                                         struct pf_probe_target **out, size_t *count,
                                         struct pf_error *err)
{
    redisReply *reply = NULL;
    enum pf_status rc;
    const char *argv[] = {NULL, NULL, "1", PF_DISC_KEY_PROBES, PF_DISC_KEY_INSTANCE_PREFIX};
    size_t lens[COUNT(argv)] = {0, 0, 1, (size_t)-1, (size_t)-1};

    *out = NULL;
    *count = 0;
    rc = run_script(conn, S_TARGETS, (int)COUNT(argv), argv, lens, &reply, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply);
        return bad_reply("probe_targets", err);
    }
    *out = calloc(reply->elements / 3 + 1, sizeof(**out));
    if (*out == NULL) {
        freeReplyObject(reply);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory");
    }
    for (size_t i = 0; i + 2 < reply->elements; i += 3) {
        struct pf_probe_target *t = &(*out)[*count];
        const redisReply *m = reply->element[i], *a = reply->element[i + 1],
                         *pm = reply->element[i + 2];
        if (!is_str(m) || !is_str(a) || m->len >= sizeof(t->member) || a->len >= sizeof(t->address))
            continue;
        memcpy(t->member, m->str, m->len + 1);
        memcpy(t->address, a->str, a->len + 1);
        if (!is_str(pm) || !pf_disc_probe_mode_parse(pm->str, &t->mode))
            t->mode = PF_DISC_PROBE_GRPC;
        (*count)++;
    }
    freeReplyObject(reply);
    return PF_OK;
}

enum pf_status pf_registry_record_probes(struct pf_registry_conn *conn,
                                         const struct pf_probe_result *results, size_t count,
                                         size_t *changed, struct pf_error *err)
{
    enum { FIXED = 8 };
    const char **argv = malloc((FIXED + PROBE_BATCH * 5) * sizeof(*argv));
    size_t *lens = malloc((FIXED + PROBE_BATCH * 5) * sizeof(*lens));
    char(*nums)[2][16] = malloc(PROBE_BATCH * sizeof(*nums));
    enum pf_status rc = PF_OK;

    if (changed != NULL)
        *changed = 0;
    if (argv == NULL || lens == NULL || nums == NULL) {
        rc = pf_error_set(err, PF_E_RESOURCE, "out of memory");
        goto out_free;
    }
    for (size_t start = 0; start < count && rc == PF_OK; start += PROBE_BATCH) {
        size_t n = count - start < PROBE_BATCH ? count - start : PROBE_BATCH;
        char nbuf[16];
        redisReply *reply = NULL;
        int argc = 0;
        snprintf(nbuf, sizeof(nbuf), "%zu", n);
        argv[argc++] = NULL;
        argv[argc++] = NULL;
        argv[argc++] = "2";
        argv[argc++] = PF_DISC_KEY_EVENTS;
        argv[argc++] = PF_DISC_KEY_VERSION;
        argv[argc++] = PF_DISC_KEY_INSTANCE_PREFIX;
        argv[argc++] = conn->reg->maxlen;
        argv[argc++] = nbuf;
        for (size_t i = 0; i < n; i++) {
            const struct pf_probe_result *r = &results[start + i];
            snprintf(nums[i][0], sizeof(nums[i][0]), "%d", r->health);
            snprintf(nums[i][1], sizeof(nums[i][1]), "%u", r->latency_us);
            argv[argc++] = r->member;
            argv[argc++] = r->address;
            argv[argc++] = nums[i][0];
            argv[argc++] = nums[i][1];
            argv[argc++] = r->error;
        }
        for (int i = 0; i < argc; i++)
            lens[i] = (size_t)-1;
        rc = run_script(conn, S_PROBES, argc, argv, lens, &reply, err);
        if (rc == PF_OK) {
            if (changed != NULL)
                *changed += (size_t)reply_ll(reply);
            freeReplyObject(reply);
        }
    }
out_free:
    free(argv);
    free(lens);
    free(nums);
    return rc;
}

/* ---- the event stream ---- */

/* Decodes one stream entry [id, [field, value, ...]] and calls fn. */
static bool deliver(const redisReply *entry, pf_registry_event_fn fn, void *arg)
{
    struct pf_registry_event ev;
    const redisReply *fields, *member;
    bool more;

    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 || !is_str(entry->element[0]) ||
        entry->element[1]->type != REDIS_REPLY_ARRAY)
        return true;
    fields = entry->element[1];
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.id, sizeof(ev.id), "%s", entry->element[0]->str);
    ev.type = (int)reply_ll(field(fields->element, fields->elements, "t"));
    ev.version = (uint64_t)reply_ll(field(fields->element, fields->elements, "v"));
    member = field(fields->element, fields->elements, "m");
    ev.status = status_from_fields(fields->element, fields->elements, member);
    if (ev.status == NULL) {
        pf_log_warn("event_undecodable", "id=%s", ev.id);
        return true;
    }
    ev.kind = (int)ev.status->instance->kind;
    more = fn(&ev, arg);
    pf_registry_status_free(ev.status);
    return more;
}

enum pf_status pf_registry_stream_position(struct pf_registry_conn *conn, char *id,
                                           uint64_t *version, struct pf_error *err)
{
    const char *xrev[] = {"XREVRANGE", PF_DISC_KEY_EVENTS, "+", "-", "COUNT", "1"};
    const char *get[] = {"GET", PF_DISC_KEY_VERSION};
    redisReply *reply = NULL;
    enum pf_status rc = ensure_redis(conn, err);

    if (rc != PF_OK)
        return rc;
    /* Two commands: a version INCR'd in between shows up as a gap, which the
     * reader then handles as any gap (safe, just rare). */
    rc = pf_redis_command(conn->redis, 6, xrev, NULL, &reply, err);
    if (rc == PF_OK) {
        snprintf(id, PF_DISC_STREAM_ID_MAX, "0-0");
        *version = 0;
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
            const redisReply *e = reply->element[0];
            if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && is_str(e->element[0])) {
                const redisReply *f = e->element[1];
                snprintf(id, PF_DISC_STREAM_ID_MAX, "%s", e->element[0]->str);
                if (f->type == REDIS_REPLY_ARRAY)
                    *version = (uint64_t)reply_ll(field(f->element, f->elements, "v"));
            }
        }
        freeReplyObject(reply);
        if (strcmp(id, "0-0") == 0) {
            rc = pf_redis_command(conn->redis, 2, get, NULL, &reply, err);
            if (rc == PF_OK) {
                *version = (uint64_t)reply_ll(reply);
                freeReplyObject(reply);
            }
        }
    }
    note(conn->reg, rc, err);
    return rc;
}

enum pf_status pf_registry_read_events(struct pf_registry_conn *conn, const char *after,
                                       int block_ms, int max, pf_registry_event_fn fn, void *arg,
                                       struct pf_error *err)
{
    char count[16], block[16];
    redisReply *reply = NULL;
    enum pf_status rc = ensure_redis(conn, err);
    int argc = 0;
    const char *argv[8];

    if (rc != PF_OK)
        return rc;
    snprintf(count, sizeof(count), "%d", max > 0 ? max : 100);
    snprintf(block, sizeof(block), "%d", block_ms);
    argv[argc++] = "XREAD";
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    if (block_ms > 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = PF_DISC_KEY_EVENTS;
    argv[argc++] = after;
    rc = pf_redis_command(conn->redis, argc, argv, NULL, &reply, err);
    note(conn->reg, rc, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1) {
        const redisReply *stream = reply->element[0];
        if (stream->type == REDIS_REPLY_ARRAY && stream->elements == 2 &&
            stream->element[1]->type == REDIS_REPLY_ARRAY) {
            const redisReply *entries = stream->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                if (!deliver(entries->element[i], fn, arg))
                    break;
            }
        }
    }
    freeReplyObject(reply);
    return PF_OK;
}

enum pf_status pf_registry_event_range(struct pf_registry_conn *conn, const char *after,
                                       const char *upto, pf_registry_event_fn fn, void *arg,
                                       struct pf_error *err)
{
    char start[PF_DISC_STREAM_ID_MAX + 2];
    redisReply *reply = NULL;
    enum pf_status rc = ensure_redis(conn, err);

    if (rc != PF_OK)
        return rc;
    snprintf(start, sizeof(start), "(%s", after);
    const char *argv[] = {"XRANGE", PF_DISC_KEY_EVENTS, start, upto};
    rc = pf_redis_command(conn->redis, 4, argv, NULL, &reply, err);
    note(conn->reg, rc, err);
    if (rc != PF_OK)
        return rc;
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            if (!deliver(reply->element[i], fn, arg))
                break;
        }
    }
    freeReplyObject(reply);
    return PF_OK;
}
