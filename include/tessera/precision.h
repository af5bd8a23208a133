/* Training precision: what the GEMM inputs are rounded to (parameters, optimizer state and
 * accumulation stay float32). */
#ifndef TESSERA_PRECISION_H
#define TESSERA_PRECISION_H

typedef enum tsr_precision {
    TSR_PRECISION_FP32 = 0, /* everything float32 (the default) */
    TSR_PRECISION_BF16 = 1, /* GEMM inputs bfloat16, float32 accumulation */
    TSR_PRECISION_FP16 = 2  /* GEMM inputs IEEE half, float32 accumulation, dynamic loss scaling */
} tsr_precision;

/* "fp32", "bf16", "fp16"; NULL for a value outside the enum. */
const char *tsr_precision_name(tsr_precision p);
/* The enum of one of those names: 0, or -1 (and *p untouched) for another text. */
int tsr_precision_parse(const char *text, tsr_precision *p);

#endif
