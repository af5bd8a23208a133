/* A host application embedding tessera: it links the installed static library through
 * pkg-config and uses only the public API (<tessera.h>). Exits non-zero when a check fails. */
#include <stdio.h>
#include <stdlib.h>
#include <tessera.h>

#define CHECK(call)                                                                      \
    do {                                                                                 \
        tsr_status st_ = (call);                                                         \
        if (st_ != TSR_OK) {                                                             \
            fprintf(stderr, "embed-app: %s failed: %s (%s)\n", #call, tsr_status_str(st_), \
                    ctx ? tsr_context_last_error(ctx) : "");                             \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)

int main(void) {
    tsr_context *ctx = NULL;
    tsr_model *model = NULL;
    int rc = 1;
    printf("tessera %s\n", tsr_version());
    CHECK(tsr_context_create(&ctx, NULL));
    for (int i = 0; i < tsr_context_device_count(ctx); i++) {
        const tsr_device_info *d = tsr_context_device(ctx, i);
        printf("device %d: %-14s %s (%u compute units)\n", i, d->id, d->name, d->compute_units);
    }

    /* A small MLP on 28x28 images: the parameter count is checked against the formula. */
    CHECK(tsr_model_parse(ctx, "dense:32,relu,dense:10", TSR_MODEL_INPUT_MNIST, &model));
    size_t want = (784 * 32 + 32) + (32 * 10 + 10);
    if (tsr_model_param_count(model) != want) {
        fprintf(stderr, "embed-app: %zu parameters, expected %zu\n", tsr_model_param_count(model),
                want);
        goto fail;
    }
    CHECK(tsr_model_summary(model, stdout));
    printf("embed-app: ok\n");
    rc = 0;
fail:
    tsr_model_free(model);
    tsr_context_free(ctx);
    return rc;
}
