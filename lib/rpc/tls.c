/* TLS and mutual-TLS credentials from PEM files, for servers and clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include "rpc/tls.h"

#define PEM_MAX (1024 * 1024)

static bool set(const char *p)
{
    return p != NULL && p[0] != '\0';
}

bool pf_tls_enabled(const struct pf_tls_files *f)
{
    return set(f->cert) || set(f->key) || set(f->ca);
}

enum pf_status pf_tls_read_pem(const char *path, char **out, struct pf_error *err)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    size_t n;

    if (fp == NULL)
        return pf_error_set(err, PF_E_INVALID, "could not open PEM file '%s': %s", path,
                            strerror(errno));
    buf = malloc(PEM_MAX + 1);
    if (buf == NULL) {
        fclose(fp);
        return pf_error_set(err, PF_E_RESOURCE, "out of memory reading '%s'", path);
    }
    n = fread(buf, 1, PEM_MAX + 1, fp);
    fclose(fp);
    if (n > PEM_MAX) {
        free(buf);
        return pf_error_set(err, PF_E_INVALID, "PEM file '%s' is larger than 1 MiB", path);
    }
    buf[n] = '\0';
    if (strstr(buf, "-----BEGIN ") == NULL) {
        free(buf);
        return pf_error_set(err, PF_E_INVALID, "'%s' is not a PEM file (no BEGIN line)", path);
    }
    *out = buf;
    return PF_OK;
}

grpc_server_credentials *pf_tls_server_credentials(const struct pf_tls_files *f,
                                                   struct pf_error *err)
{
    char *cert = NULL, *key = NULL, *ca = NULL;
    grpc_server_credentials *creds = NULL;

    if (!pf_tls_enabled(f))
        return grpc_insecure_server_credentials_create();
    if (!set(f->cert) || !set(f->key)) {
        pf_error_set(err, PF_E_INVALID, "TLS needs both --tls-cert and --tls-key");
        return NULL;
    }
    if (pf_tls_read_pem(f->cert, &cert, err) != PF_OK)
        goto out_free;
    if (pf_tls_read_pem(f->key, &key, err) != PF_OK)
        goto out_free;
    if (set(f->ca) && pf_tls_read_pem(f->ca, &ca, err) != PF_OK)
        goto out_free;
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (creds == NULL)
        pf_error_set(err, PF_E_INVALID, "could not make TLS credentials from '%s' and '%s'",
                     f->cert, f->key);
out_free:
    free(cert);
    free(key);
    free(ca);
    return creds;
}

grpc_channel_credentials *pf_tls_channel_credentials(const struct pf_tls_files *f, bool force_tls,
                                                     struct pf_error *err)
{
    char *cert = NULL, *key = NULL, *ca = NULL;
    grpc_channel_credentials *creds = NULL;

    if (!pf_tls_enabled(f) && !force_tls)
        return grpc_insecure_credentials_create();
    if (set(f->cert) != set(f->key)) {
        pf_error_set(err, PF_E_INVALID, "a client certificate needs both --tls-cert and --tls-key");
        return NULL;
    }
    if (set(f->ca) && pf_tls_read_pem(f->ca, &ca, err) != PF_OK)
        goto out_free;
    if (set(f->cert)) {
        if (pf_tls_read_pem(f->cert, &cert, err) != PF_OK)
            goto out_free;
        if (pf_tls_read_pem(f->key, &key, err) != PF_OK)
            goto out_free;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    creds = grpc_ssl_credentials_create_ex(ca, cert != NULL ? &pair : NULL, NULL, NULL);
    if (creds == NULL)
        pf_error_set(err, PF_E_INVALID, "could not make TLS client credentials");
out_free:
    free(cert);
    free(key);
    free(ca);
    return creds;
}
