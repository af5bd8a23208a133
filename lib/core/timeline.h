/* Chrome/Perfetto trace of a run (trainer options' timeline = file.json, which TSR_TIMELINE
 * sets; after Horovod's HOROVOD_TIMELINE): complete events
 * {"name","ph":"X","ts","dur","pid":rank,"tid":track} in microseconds since the timeline was
 * created. Events are kept in memory; tsr_timeline_flush gathers every rank's events
 * to rank 0 (collective when a communicator is given), which writes one JSON array. */
#ifndef TSR_TIMELINE_H
#define TSR_TIMELINE_H
#include <stddef.h>
#include "lib/core/internal.h"
#include "tessera/comm.h"

typedef struct tsr_timeline tsr_timeline;

/* Tracks (tid) of a rank. */
enum { TSR_TRACK_COMPUTE = 0, TSR_TRACK_COMM = 1 };

tsr_status tsr_timeline_create(tsr_context *ctx, const char *path, int rank, tsr_timeline **out);
/* Microseconds since creation. */
double tsr_timeline_now(const tsr_timeline *tl);
/* Records [t0, t1) (from tsr_timeline_now) on `track`; name is copied. NULL tl: no-op. */
tsr_status tsr_timeline_event(tsr_timeline *tl, const char *name, int track, double t0, double t1);
size_t tsr_timeline_count(const tsr_timeline *tl);
/* Writes the file (rank 0; every rank of comm must call it; comm may be NULL). */
tsr_status tsr_timeline_flush(tsr_timeline *tl, tsr_comm *comm);
void tsr_timeline_free(tsr_timeline *tl); /* accepts NULL; does not flush */

#endif
