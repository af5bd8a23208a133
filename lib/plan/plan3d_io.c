/* 3D plans as text (the device table, the runners-up and why they lost, the refused layouts)
 * and as a picture (SVG: devices by host, one step's schedule). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/plan/plan3d_internal.h"

static const char *slots_name(int slots) {
    return slots == 0 ? "SGD" : slots == 1 ? "momentum" : slots == 2 ? "Adam" : "optimizer";
}

static void degrees(char *buf, size_t n, const tsr_p3_cost *c) {
    snprintf(buf, n, "tensor %zu x pipeline %zu x data %zu, %zu micro-batch%s of %zu%s", c->t, c->p,
             c->d, c->m, c->m == 1 ? "" : "es", c->mb, c->offload ? ", optimizer on the host" : "");
}

/* Why a runner-up lost: the part of its step that grew most against the plan's. */
static void why_lost(char *buf, size_t n, const tsr_p3_cost *w, const tsr_p3_cost *c) {
    static const char *what[5] = {"more compute on its slowest stage", "more tensor allreduce",
                                  "more hand-over between stages", "a larger bubble",
                                  "a longer data allreduce (and offloaded optimizer step)"};
    double dw[5] = {c->compute - w->compute, c->tp - w->tp, c->send - w->send,
                    c->bubble - w->bubble, c->allreduce - w->allreduce};
    int k = 0;
    for (int i = 1; i < 5; i++)
        if (dw[i] > dw[k]) k = i;
    snprintf(buf, n, "%s (+%.3g s)", what[k], dw[k]);
}

static void parts(FILE *f, const tsr_p3_cost *c) {
    fprintf(f, "compute %.4g s, tensor allreduce %.4g s, hand-over %.4g s, bubble %.4g s (%zu/%zu), "
               "data allreduce %.4g s",
            c->compute, c->tp, c->send, c->bubble, c->p - 1, c->m + c->p - 1, c->allreduce);
    if (c->offload) fprintf(f, " (with the optimizer step on the host)");
}

tsr_status tsr_plan3d_print(const tsr_plan3d *p, FILE *f) {
    if (!p || !f) return TSR_ERR_INVALID_ARG;
    const tsr_p3_cost *b = &p->best;
    char deg[160];
    degrees(deg, sizeof deg, b);
    fprintf(f, "3D plan for %s\n", p->title);
    fprintf(f, "layout: %s (%zu device%s), batch %zu, %s (%d optimizer float%s per parameter%s%s), %s activations\n",
            deg, p->ndevices, p->ndevices == 1 ? "" : "s", p->opt.batch, slots_name(p->opt.optimizer_slots), p->opt.optimizer_slots,
            p->opt.optimizer_slots == 1 ? "" : "s", p->opt.zero ? ", ZeRO over the data copies" : "",
            b->offload ? ", kept on the host: ZeRO-Offload" : "", tsr_precision_name(p->opt.precision));
    fprintf(f, "predicted step %.4g s (%.1f sequences/s): ", b->step, (double)p->opt.batch / b->step);
    parts(f, b);
    fprintf(f, "\n");
    fprintf(f, "%4s %5s %-8s %-16s %-18s %7s %23s %12s\n", "copy", "stage", "blocks", "host",
            "device", "heads", "memory used / limit", "busy s/step");
    for (size_t i = 0; i < p->ndevices; i++) {
        const tsr_p3_device *d = &p->devices[i];
        size_t first = 0;
        for (size_t s = 0; s < d->stage; s++) first += p->blocks[s];
        char blocks[32], used[32], lim[32], mem[72], heads[32];
        snprintf(blocks, sizeof blocks, "%zu-%zu", first, first + p->blocks[d->stage] - 1);
        tsr_plan_format_bytes(used, sizeof used, d->memory);
        tsr_plan_format_bytes(lim, sizeof lim, d->limit);
        snprintf(mem, sizeof mem, "%s / %s", used, lim);
        snprintf(heads, sizeof heads, "%zu/%zu", d->heads, p->heads_total);
        int first_stage = d->stage == 0, last_stage = d->stage + 1 == b->p;
        fprintf(f, "%4zu %5zu %-8s %-16.16s %-18.18s %7s %23s %12.4g%s%s\n", d->copy, d->stage, blocks,
                p->host_name[i], p->dev_id[i], heads, mem, d->busy_s,
                first_stage ? "  + embeddings" : "", last_stage ? (first_stage ? ", ln_f, head" : "  + ln_f, head") : "");
    }
    fprintf(f, "stages per micro-batch (forward + backward + hand-over, the slowest copy):");
    for (size_t s = 0; s < b->p; s++) fprintf(f, " %.4g", p->stage_s[s]);
    fprintf(f, " s\n");
    if (p->nrunners) {
        fprintf(f, "runners-up (the best of other degrees):\n");
        for (size_t k = 0; k < p->nrunners; k++) {
            const tsr_p3_cost *c = &p->runners[k];
            char d2[160], why[96];
            degrees(d2, sizeof d2, c);
            why_lost(why, sizeof why, b, c);
            fprintf(f, "  %-60s step %.4g s (+%.1f%%): %s\n", d2, c->step,
                    100 * (c->step / b->step - 1), why);
        }
    }
    if (p->nper_tensor) {
        fprintf(f, "the best of each other tensor degree:\n");
        for (size_t k = 0; k < p->nper_tensor; k++) {
            const tsr_p3_cost *c = &p->per_tensor[k];
            char d2[160], why[96];
            degrees(d2, sizeof d2, c);
            why_lost(why, sizeof why, b, c);
            fprintf(f, "  %-60s step %.4g s (+%.1f%%): %s\n", d2, c->step,
                    100 * (c->step / b->step - 1), why);
        }
    }
    if (p->refused_total) {
        fprintf(f, "refused for memory: %zu degree choices fit at no micro-batch count; the closest:\n",
                p->refused_total);
        for (size_t k = 0; k < p->nrefused && k < 3; k++)
            fprintf(f, "  tensor %zu x pipeline %zu x data %zu%s: %s\n", p->refused[k].t,
                    p->refused[k].p, p->refused[k].d,
                    p->refused[k].offload ? " (optimizer on the host)" : "", p->refused[k].why);
    }
    fprintf(f, "searched %zu layouts (degrees x micro-batch counts), %.0f stage evaluations\n",
            p->layouts, p->work);
    return ferror(f) ? tsr_error(p->ctx, TSR_ERR_IO, "3D plan: write failed") : TSR_OK;
}

/* ---------------------------------------------------------------- picture */

static const char *stage_colour(size_t s) {
    static const char *c[12] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                                "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#8c564b"};
    return c[s % 12];
}

/* One copy's 1F1B schedule: stage s runs min(P - s - 1, M) forwards, then one forward and
 * one backward in turn, then the remaining backwards; an operation starts when its input is
 * ready (forward: the previous stage's forward of that micro-batch; backward: the next
 * stage's backward) and the stage is free. Backward takes twice the forward. Start times into
 * fs/bs[s x M + j]; returns the step's span. */
static double schedule(const tsr_plan3d *p, double *fs, double *bs) {
    size_t P = p->best.p, M = p->best.m;
    size_t *next_f = tsr_calloc(p->ctx, P, sizeof *next_f), *next_b = tsr_calloc(p->ctx, P, sizeof *next_b);
    double *free_at = tsr_calloc(p->ctx, P, sizeof *free_at);
    double span = -1; /* allocation failed */
    if (!next_f || !next_b || !free_at) goto out;
    span = 0;
    for (size_t i = 0; i < P * M; i++) fs[i] = bs[i] = -1;
    size_t left = 2 * P * M;
    while (left) {
        int progressed = 0;
        for (size_t s = 0; s < P; s++) {
            double tf = p->stage_s[s] / 3, tb = 2 * tf;
            for (;;) {
                size_t warm = P - s - 1 < M ? P - s - 1 : M;
                /* which operation is next on this stage */
                int fwd;
                if (next_f[s] >= M)
                    fwd = 0;
                else if (next_f[s] < warm)
                    fwd = 1;
                else
                    fwd = next_f[s] - warm <= next_b[s] ? 1 : 0;
                if (!fwd && next_b[s] >= M) break;
                size_t j = fwd ? next_f[s] : next_b[s];
                double ready;
                if (fwd)
                    ready = s == 0 ? 0 : fs[(s - 1) * M + j] >= 0 ? fs[(s - 1) * M + j] + p->stage_s[s - 1] / 3 : -1;
                else
                    ready = s + 1 == P ? (fs[s * M + j] >= 0 ? fs[s * M + j] + tf : -1)
                                       : bs[(s + 1) * M + j] >= 0 ? bs[(s + 1) * M + j] + 2 * p->stage_s[s + 1] / 3 : -1;
                if (ready < 0) break;
                double start = ready > free_at[s] ? ready : free_at[s];
                if (fwd) {
                    fs[s * M + j] = start;
                    free_at[s] = start + tf;
                    next_f[s]++;
                } else {
                    bs[s * M + j] = start;
                    free_at[s] = start + tb;
                    next_b[s]++;
                }
                if (free_at[s] > span) span = free_at[s];
                left--;
                progressed = 1;
            }
        }
        if (!progressed) break; /* cannot happen for a 1F1B order; guards the loop */
    }
out:
    tsr_free(p->ctx, next_f);
    tsr_free(p->ctx, next_b);
    tsr_free(p->ctx, free_at);
    return span;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

tsr_status tsr_plan3d_write_svg(const tsr_plan3d *p, FILE *f) {
    if (!p || !f) return TSR_ERR_INVALID_ARG;
    const tsr_p3_cost *b = &p->best;
    size_t P = b->p, M = b->m, n = p->ndevices;
    /* hosts in the order the devices use them */
    int *hosts = tsr_calloc(p->ctx, n + 1, sizeof *hosts), *per = tsr_calloc(p->ctx, n + 1, sizeof *per);
    double *fs = tsr_calloc(p->ctx, P * M, sizeof *fs), *bs = tsr_calloc(p->ctx, P * M, sizeof *bs);
    if (!hosts || !per || !fs || !bs) {
        tsr_free(p->ctx, hosts), tsr_free(p->ctx, per), tsr_free(p->ctx, fs), tsr_free(p->ctx, bs);
        return tsr_error(p->ctx, TSR_ERR_NO_MEMORY, "3D plan: picture");
    }
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < nh && hosts[k] != p->devices[i].host) k++;
        if (k == nh) hosts[nh++] = p->devices[i].host;
        per[k]++;
    }
    int maxper = 1;
    for (size_t k = 0; k < nh; k++)
        if (per[k] > maxper) maxper = per[k];
    const double dw = 74, dh = 34, pad = 8;
    int cols = maxper > 4 ? 2 : 4;
    double hw = maxper * (dw + 4) + 2 * pad, hh = dh + 30;
    size_t rows = (nh + (size_t)cols - 1) / (size_t)cols;
    double width = cols * (hw + 10) + 20;
    if (width < 1000) width = 1000;
    double top2 = 70 + rows * (hh + 10) + 30;
    double lane = 22, plot_w = width - 140;
    double height = top2 + 40 + P * (lane + 4) + 60;
    double span = schedule(p, fs, bs);
    if (span < 0) {
        tsr_free(p->ctx, hosts), tsr_free(p->ctx, per), tsr_free(p->ctx, fs), tsr_free(p->ctx, bs);
        return tsr_error(p->ctx, TSR_ERR_NO_MEMORY, "3D plan: schedule");
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n",
            width, height, width, height);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, height);
    fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">");
    xml_text(f, p->title);
    fprintf(f, "</text>\n<text x=\"10\" y=\"40\">tensor %zu x pipeline %zu x data %zu, %zu "
               "micro-batches of %zu; predicted step %.4g s</text>\n",
            b->t, b->p, b->d, M, b->mb, b->step);
    fprintf(f, "<text x=\"10\" y=\"60\" font-weight=\"bold\">Devices by host (colour: stage; "
               "label: stage, heads)</text>\n");
    for (size_t k = 0; k < nh; k++) {
        double x = 10 + (double)(k % (size_t)cols) * (hw + 10), y = 70 + (double)(k / (size_t)cols) * (hh + 10);
        const char *name = "";
        for (size_t i = 0; i < n; i++)
            if (p->devices[i].host == hosts[k]) name = p->host_name[i];
        fprintf(f, "<g class=\"host\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                   "rx=\"6\" fill=\"#f4f4f4\" stroke=\"#888\"/>\n<text x=\"%.1f\" y=\"%.1f\">",
                x, y, hw, hh, x + pad, y + 14);
        xml_text(f, name);
        fprintf(f, "</text>\n");
        int slot = 0;
        for (size_t i = 0; i < n; i++) {
            const tsr_p3_device *d = &p->devices[i];
            if (d->host != hosts[k]) continue;
            double dx = x + pad + slot++ * (dw + 4), dy = y + 22;
            fprintf(f, "<rect class=\"device\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                       "fill=\"%s\" stroke=\"#333\"><title>",
                    dx, dy, dw, dh, stage_colour(d->stage));
            xml_text(f, p->dev_id[i]);
            fprintf(f, ": copy %zu, stage %zu, %zu of %zu heads</title></rect>\n", d->copy, d->stage,
                    d->heads, p->heads_total);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"white\">s%zu c%zu</text>"
                       "<text x=\"%.1f\" y=\"%.1f\" fill=\"white\">%zu/%zu heads</text>\n",
                    dx + 4, dy + 14, d->stage, d->copy, dx + 4, dy + 28, d->heads, p->heads_total);
        }
        fprintf(f, "</g>\n");
    }
    fprintf(f, "<text x=\"10\" y=\"%.1f\" font-weight=\"bold\">One step of copy 0 (1F1B): forward "
               "light, backward dark, the bubble is the empty space</text>\n",
            top2);
    double scale = span > 0 ? plot_w / span : 0;
    for (size_t s = 0; s < P; s++) {
        double y = top2 + 14 + (double)s * (lane + 4);
        fprintf(f, "<text x=\"10\" y=\"%.1f\">stage %zu</text>\n", y + 15, s);
        fprintf(f, "<rect x=\"110\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                   "stroke=\"#ccc\"/>\n",
                y, plot_w, lane);
        double tf = p->stage_s[s] / 3;
        for (size_t j = 0; j < M; j++) {
            double x0 = 110 + fs[s * M + j] * scale, x1 = 110 + bs[s * M + j] * scale;
            fprintf(f, "<rect class=\"fwd\" data-stage=\"%zu\" data-mb=\"%zu\" x=\"%.2f\" y=\"%.1f\" "
                       "width=\"%.2f\" height=\"%.1f\" fill=\"%s\" fill-opacity=\"0.45\" stroke=\"#333\" "
                       "stroke-width=\"0.3\"/>\n",
                    s, j, x0, y, tf * scale, lane, stage_colour(s));
            fprintf(f, "<rect class=\"bwd\" data-stage=\"%zu\" data-mb=\"%zu\" x=\"%.2f\" y=\"%.1f\" "
                       "width=\"%.2f\" height=\"%.1f\" fill=\"%s\" stroke=\"#333\" "
                       "stroke-width=\"0.3\"/>\n",
                    s, j, x1, y, 2 * tf * scale, lane, stage_colour(s));
        }
    }
    double ya = top2 + 14 + (double)P * (lane + 4) + 16;
    fprintf(f, "<text x=\"110\" y=\"%.1f\">0 s</text><text x=\"%.1f\" y=\"%.1f\" "
               "text-anchor=\"end\">%.4g s (pipeline; + data allreduce %.4g s)</text>\n",
            ya, 110 + plot_w, ya, span, b->allreduce);
    fprintf(f, "</svg>\n");
    tsr_free(p->ctx, hosts), tsr_free(p->ctx, per), tsr_free(p->ctx, fs), tsr_free(p->ctx, bs);
    return ferror(f) ? tsr_error(p->ctx, TSR_ERR_IO, "3D plan: write failed") : TSR_OK;
}
