/* tsr-tokenize: text files -> token files for language models (tsr_tokens_*).
 *
 *   tsr-tokenize --bytes IN... OUTDIR [--val-fraction F]
 *
 * Byte-level tokens (vocabulary 256: each byte is its own token) of the inputs concatenated in
 * the order given; the first (1 - F) of them go to OUTDIR/train.bin, the last F to
 * OUTDIR/val.bin (F = 0.1 by default; the split is at floor(n x (1 - F)), as nanoGPT's
 * shakespeare_char prepare.py). OUTDIR is created when missing (its parent must exist).
 * Exit 0 on success, 2 for a usage error, 1 when a file cannot be read or written. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "tessera.h"

static int usage(const char *why) {
    if (why) fprintf(stderr, "tsr-tokenize: %s\n", why);
    fprintf(stderr, "usage: tsr-tokenize --bytes IN... OUTDIR [--val-fraction F]\n"
                    "  writes OUTDIR/train.bin (the first 1-F) and OUTDIR/val.bin (the last F)\n"
                    "  of the inputs' bytes as tokens (vocabulary 256); F in (0, 1), default "
                    "0.1\n");
    return why ? 2 : 0;
}

/* Appends the bytes of `path` to *text (grown as needed). 0, or prints why and returns 1. */
static int append_file(const char *path, unsigned char **text, size_t *len, size_t *cap) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "tsr-tokenize: %s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    for (;;) {
        if (*cap - *len < 65536) {
            size_t ncap = *cap ? *cap * 2 : 1 << 20;
            unsigned char *p = realloc(*text, ncap);
            if (!p) {
                fprintf(stderr, "tsr-tokenize: %s: out of memory after %zu bytes\n", path, *len);
                fclose(fp);
                return 1;
            }
            *text = p;
            *cap = ncap;
        }
        size_t k = fread(*text + *len, 1, *cap - *len, fp);
        *len += k;
        if (k == 0) break;
    }
    int bad = ferror(fp); /* a folder opens, then fails to read with EISDIR */
    int e = errno;
    fclose(fp);
    if (bad) {
        fprintf(stderr, "tsr-tokenize: %s: read failed: %s\n", path, strerror(e));
        return 1;
    }
    return 0;
}

/* Writes bytes [first, first + n) of text as tokens to dir/name. 0, or prints why: 1. */
static int write_split(tsr_context *ctx, const char *dir, const char *name,
                       const unsigned char *text, size_t n) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        fprintf(stderr, "tsr-tokenize: %s: path too long\n", dir);
        return 1;
    }
    uint32_t *tokens = malloc((n ? n : 1) * sizeof *tokens);
    if (!tokens) {
        fprintf(stderr, "tsr-tokenize: %s: out of memory for %zu tokens\n", path, n);
        return 1;
    }
    for (size_t i = 0; i < n; i++) tokens[i] = text[i];
    tsr_status st = tsr_tokens_save(ctx, path, tokens, n);
    free(tokens);
    if (st != TSR_OK) {
        fprintf(stderr, "tsr-tokenize: %s (%s)\n", tsr_context_last_error(ctx),
                tsr_status_name(st));
        return 1;
    }
    printf("%s: %zu tokens\n", path, n);
    return 0;
}

int main(int argc, char **argv) {
    int bytes = 0;
    double fraction = 0.1;
    const char **paths = calloc((size_t)argc, sizeof *paths);
    int npaths = 0;
    if (!paths) return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bytes") == 0) {
            bytes = 1;
        } else if (strcmp(argv[i], "--val-fraction") == 0) {
            char *end = NULL;
            if (i + 1 < argc) {
                errno = 0;
                fraction = strtod(argv[i + 1], &end);
            }
            if (i + 1 >= argc || end == argv[i + 1] || *end || errno || !(fraction > 0) ||
                !(fraction < 1)) {
                fprintf(stderr, "tsr-tokenize: --val-fraction '%s' is not a number in (0, 1)\n",
                        i + 1 < argc ? argv[i + 1] : "");
                free(paths);
                return 2;
            }
            i++;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            free(paths);
            return usage(NULL);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tsr-tokenize: unknown option '%s'\n", argv[i]);
            free(paths);
            return usage("see above");
        } else {
            paths[npaths++] = argv[i];
        }
    }
    if (!bytes || npaths < 2) {
        free(paths);
        return usage(!bytes ? "--bytes is required (byte-level tokens are the one tokenizer)"
                            : "needs at least one input file and the output folder");
    }
    const char *outdir = paths[npaths - 1];
    struct stat sb;
    if (stat(outdir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "tsr-tokenize: %s exists and is not a folder\n", outdir);
        free(paths);
        return 2;
    }

    unsigned char *text = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < npaths - 1; i++) {
        if (append_file(paths[i], &text, &len, &cap)) {
            free(text);
            free(paths);
            return 1;
        }
    }
    size_t ntrain = (size_t)((double)len * (1.0 - fraction)), nval = len - ntrain;
    if (len == 0) {
        fprintf(stderr, "tsr-tokenize: the corpus is empty: the %d input file(s) hold no bytes\n",
                npaths - 1);
        free(text);
        free(paths);
        return 1;
    }
    if (ntrain == 0 || nval == 0) {
        fprintf(stderr,
                "tsr-tokenize: the corpus has %zu bytes: %zu for training and %zu for "
                "validation with --val-fraction %g (both need at least one)\n",
                len, ntrain, nval, fraction);
        free(text);
        free(paths);
        return 1;
    }
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "tsr-tokenize: cannot create folder %s: %s\n", outdir, strerror(errno));
        free(text);
        free(paths);
        return 1;
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC; /* no devices needed */
    tsr_context *ctx = NULL;
    int rc = 1;
    if (tsr_context_create(&ctx, &co) != TSR_OK) {
        fprintf(stderr, "tsr-tokenize: cannot create a context\n");
    } else {
        rc = write_split(ctx, outdir, "train.bin", text, ntrain);
        if (!rc) rc = write_split(ctx, outdir, "val.bin", text + ntrain, nval);
    }
    if (!rc) printf("%zu bytes of %d file(s): vocabulary 256\n", len, npaths - 1);
    tsr_context_free(ctx);
    free(text);
    free(paths);
    return rc;
}
