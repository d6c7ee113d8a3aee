/* A growable byte buffer with a hard maximum, for everything fed from the
 * network or a file. Embedded by value: pf_buf_init / pf_buf_release. */
#ifndef PF_BUF_H
#define PF_BUF_H

#include <stdint.h>
#include "status.h"

struct pf_buf {
    char *data; /* always NUL-terminated when not NULL */
    size_t len;
    size_t cap;
    size_t max; /* 0 = unlimited */
};

void pf_buf_init(struct pf_buf *b, size_t max);
void pf_buf_release(struct pf_buf *b);
void pf_buf_reset(struct pf_buf *b); /* len = 0, keeps memory */
/* Appends; PF_E_RESOURCE when the maximum would be passed (buffer unchanged). */
enum pf_status pf_buf_append(struct pf_buf *b, const void *data, size_t len) PF_MUST_CHECK;
enum pf_status pf_buf_printf(struct pf_buf *b, const char *fmt, ...) PF_PRINTF(2, 3) PF_MUST_CHECK;
/* Hands the memory to the caller (free() it) and leaves b empty; an empty
 * buffer yields a freshly allocated "" (NULL only when memory runs out). */
char *pf_buf_detach(struct pf_buf *b, size_t *len_out);

#endif
