/* Private IDX entry points (fuzz targets and tests parse from memory, no file needed). */
#ifndef TSR_IDX_H
#define TSR_IDX_H
#include <stddef.h>
#include "tessera.h"

/* Parses an IDX image held in memory (gzip detected by its magic). `name` is used in error
 * details in place of a file name. Same validation and result as tsr_idx_load. */
tsr_status tsr_idx_load_mem(tsr_context *ctx, const char *name, const void *data, size_t size,
                            tsr_idx **out);

/* Element size of an IDX type code, 0 if the code is unknown. */
size_t tsr_idx_type_size(int type);
/* "ubyte", "byte", "short", "int", "float", "double", or "unknown". */
const char *tsr_idx_type_name(int type);

/* Reads a whole file into tsr_malloc'ed memory (shared by the IDX and checkpoint loaders).
 * Missing file -> TSR_ERR_NOT_FOUND, other failures -> TSR_ERR_IO, both naming `path`. */
tsr_status tsr_read_file(tsr_context *ctx, const char *path, void **data, size_t *size);

#endif
