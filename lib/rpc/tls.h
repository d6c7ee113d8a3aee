/* TLS and mutual TLS credentials for servers and clients from PEM files. */
#ifndef PF_RPC_TLS_H
#define PF_RPC_TLS_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include "status.h"

/* Paths; NULL or "" = unset. Server: cert+key turn TLS on; ca adds required,
 * verified client certificates (mTLS). Client: ca (the roots to trust) or
 * cert+key turn TLS on; cert+key are presented for mTLS. */
struct pf_tls_files {
    const char *cert;
    const char *key;
    const char *ca;
};

bool pf_tls_enabled(const struct pf_tls_files *f);
/* New credentials (insecure when TLS is off); the caller releases them. NULL
 * with err set when a file cannot be read or only one of cert/key is given. */
grpc_server_credentials *pf_tls_server_credentials(const struct pf_tls_files *f,
                                                   struct pf_error *err);
grpc_channel_credentials *pf_tls_channel_credentials(const struct pf_tls_files *f, bool force_tls,
                                                     struct pf_error *err);
/* Reads a whole PEM file (at most 1 MiB) into a new NUL-terminated string. */
enum pf_status pf_tls_read_pem(const char *path, char **out, struct pf_error *err) PF_MUST_CHECK;

#endif
