/* Host allocator hook: every host allocation of a context goes through it. */
#ifndef TESSERA_ALLOC_H
#define TESSERA_ALLOC_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_allocator {
    /* Returns NULL on failure. Memory must be aligned for any type (as malloc). */
    void *(*alloc)(void *opaque, size_t size);
    /* Must accept NULL. */
    void (*free)(void *opaque, void *ptr);
    void *opaque;
} tsr_allocator;

#ifdef __cplusplus
}
#endif
#endif
