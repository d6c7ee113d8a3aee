/* pf-web's HTTP server on --listen (see http.c). */
#ifndef PF_WEB_HTTP_H
#define PF_WEB_HTTP_H

#include "web.h"

struct pf_web_http;

/* Starts serving (threads of its own); logs `event=listening port=N`. */
struct pf_web_http *pf_web_http_start(struct pf_web *w, struct pf_error *err);
/* Stops; event streams end within about a second (w->stopping must be set). */
void pf_web_http_stop(struct pf_web_http *h);

#endif
