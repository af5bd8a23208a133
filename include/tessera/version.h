/* tessera version. */
#ifndef TESSERA_VERSION_H
#define TESSERA_VERSION_H

#define TSR_VERSION_MAJOR 0
#define TSR_VERSION_MINOR 1
#define TSR_VERSION_PATCH 0
#define TSR_VERSION_STRING "0.1.0"
/* Comparable number: 10000*major + 100*minor + patch. */
#define TSR_VERSION_NUMBER (TSR_VERSION_MAJOR * 10000 + TSR_VERSION_MINOR * 100 + TSR_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif
/* Version of the linked library (may differ from the header's). */
const char *tsr_version(void);
#ifdef __cplusplus
}
#endif
#endif
