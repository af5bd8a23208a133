/* Private to the host backend's oneDNN modules (host_dnnl.c, host_conv.c); only with
 * TSR_WITH_DNNL. */
#ifndef TSR_BACKEND_HOST_DNNL_H
#define TSR_BACKEND_HOST_DNNL_H
#include <oneapi/dnnl/dnnl.h>
#include "backends/host/host.h"

/* Attributes every primitive here is created with: a user-managed scratchpad. oneDNN's own
 * ("library") scratchpad is one buffer for the whole process in Debian's build, which the pool's
 * threads running primitives at once would share; each execution brings its own instead. */
dnnl_status_t tsr_host_dnnl_attr(dnnl_primitive_attr_t *attr);
/* Executes p with args[0..n) plus, when its descriptor asks for one, a scratchpad of its own
 * (malloc'd on the executing thread: the context's allocator need not be thread-safe), and
 * waits for it. */
dnnl_status_t tsr_host_dnnl_run(dnnl_engine_t engine, dnnl_stream_t st, dnnl_primitive_t p, int n,
                                const dnnl_exec_arg_t *args);
#endif
