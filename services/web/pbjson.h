/* JSON text for pf-web's API: string escaping, and any protobuf-c message
 * rendered through its descriptor (field names as in the .proto, enums as
 * lower-case names without their type prefix, 64-bit integers as numbers,
 * bytes left out). Pure functions over memory, no I/O. */
#ifndef PF_WEB_PBJSON_H
#define PF_WEB_PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include "buf.h"

/* Appends text as a JSON string literal (quotes included); invalid UTF-8 bytes
 * become U+FFFD. NULL is written as "". */
enum pf_status pf_web_json_string(struct pf_buf *out, const char *text) PF_MUST_CHECK;
/* Appends msg as a JSON object (NULL as null). */
enum pf_status pf_web_json_message(struct pf_buf *out, const ProtobufCMessage *msg) PF_MUST_CHECK;
/* The JSON name of an enum value: "PRINTER_STATE_AWAITING_CLEAR" ->
 * "awaiting_clear" (static storage of the descriptor, copied into out). */
void pf_web_json_enum_name(const ProtobufCEnumDescriptor *d, int value, char *out, size_t out_size);

#endif
