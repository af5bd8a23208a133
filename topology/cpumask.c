/* CPU masks in the kernel's list form ("0-3,8-11") and the split of a locality among ranks. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

#define MAX_CPU (64 * TSR_CPUMASK_WORDS)

int tsr_cpumask_parse(const char *list, tsr_cpumask *m) {
    memset(m, 0, sizeof *m);
    if (!list) return -1;
    const char *p = list;
    while (*p == ' ' || *p == '\n') p++;
    if (!*p) return 0; /* empty list: no CPU */
    for (;;) {
        if (!isdigit((unsigned char)*p)) return -1;
        char *end;
        unsigned long lo = strtoul(p, &end, 10), hi = lo;
        p = end;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p)) return -1;
            hi = strtoul(p, &end, 10);
            p = end;
        }
        if (lo > hi || hi >= MAX_CPU) return -1;
        for (unsigned long c = lo; c <= hi; c++) tsr_cpumask_set(m, (unsigned)c);
        if (*p == ',') {
            p++;
            continue;
        }
        while (*p == ' ' || *p == '\n') p++;
        return *p ? -1 : 0;
    }
}

void tsr_cpumask_format(const tsr_cpumask *m, char *buf, size_t n) {
    size_t used = 0;
    if (!n) return;
    buf[0] = '\0';
    for (unsigned c = 0; c < MAX_CPU; c++) {
        if (!tsr_cpumask_isset(m, c)) continue;
        unsigned e = c;
        while (e + 1 < MAX_CPU && tsr_cpumask_isset(m, e + 1)) e++;
        int w = e > c ? snprintf(buf + used, n - used, "%s%u-%u", used ? "," : "", c, e)
                      : snprintf(buf + used, n - used, "%s%u", used ? "," : "", c);
        if (w < 0 || (size_t)w >= n - used) { /* does not fit: keep what is complete */
            buf[used] = '\0';
            return;
        }
        used += (size_t)w;
        c = e;
    }
}

int tsr_cpumask_count(const tsr_cpumask *m) {
    int n = 0;
    for (int i = 0; i < TSR_CPUMASK_WORDS; i++) n += __builtin_popcountll(m->bits[i]);
    return n;
}

void tsr_topology_split_cpus(const tsr_cpumask *cores, int ncores, const tsr_cpumask *near, int k,
                             int i, tsr_cpumask *out) {
    memset(out, 0, sizeof *out);
    /* the cores that intersect the locality, in order */
    int n = 0;
    for (int c = 0; c < ncores; c++) {
        for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
            if (cores[c].bits[w] & near->bits[w]) {
                n++;
                break;
            }
    }
    if (n == 0 || k <= 0 || i < 0 || i >= k) {
        *out = *near;
        return;
    }
    int first, last; /* index range [first, last) among intersecting cores */
    if (n < k) {
        first = i % n;
        last = first + 1;
    } else { /* contiguous runs; the first n % k runs get one core more */
        int base = n / k, extra = n % k;
        first = i * base + (i < extra ? i : extra);
        last = first + base + (i < extra ? 1 : 0);
    }
    int seen = 0;
    for (int c = 0; c < ncores && seen < last; c++) {
        int hit = 0;
        for (int w = 0; w < TSR_CPUMASK_WORDS; w++) hit |= (cores[c].bits[w] & near->bits[w]) != 0;
        if (!hit) continue;
        if (seen >= first)
            for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                out->bits[w] |= cores[c].bits[w] & near->bits[w];
        seen++;
    }
}
