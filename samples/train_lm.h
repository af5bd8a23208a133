/* tsr-train's language-model path (included by tsr-train.c): a GPT on llm.c token files,
 *   tsr-train --model gpt-mini --data DIR [--steps N] [--context T] [--batch B]
 * DIR holds train.bin and val.bin. Each step draws --batch random windows of T + 1 tokens
 * (seeded, sharded over the ranks as the mode splits its data); validation runs over the
 * sequential windows of val.bin every --eval-every steps and at the end. Prints train/val loss
 * and tokens/s; --json gives val_loss, final_loss, tokens_per_s. Checkpoints carry the step:
 * --resume continues the same stream of windows. */

typedef struct lm_run {
    tsr_context *ctx;
    const args *a;
    tsr_trainer *tr;
    tsr_model *model;
    tsr_dataset *val;
    size_t context, batch;   /* tokens per sequence; sequences per step on this rank */
    size_t global_batch;     /* sequences per step over the ranks */
    int rank;
} lm_run;

static tsr_status lm_meta(lm_run *r, double train_loss, double val_loss) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return TSR_ERR_NO_MEMORY;
    cJSON_AddStringToObject(j, "data", "tokens");
    cJSON_AddNumberToObject(j, "context", (double)r->context);
    cJSON_AddNumberToObject(j, "batch", (double)r->global_batch);
    if (isfinite(train_loss)) cJSON_AddNumberToObject(j, "train_loss", train_loss);
    if (isfinite(val_loss)) cJSON_AddNumberToObject(j, "val_loss", val_loss);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return TSR_ERR_NO_MEMORY;
    tsr_status s = tsr_trainer_set_metadata(r->tr, text);
    cJSON_free(text);
    return s;
}

static tsr_status lm_save(lm_run *r, double train_loss, double val_loss) {
    if (!r->a->checkpoint) return TSR_OK;
    tsr_status s = lm_meta(r, train_loss, val_loss);
    if (s != TSR_OK) return s;
    return tsr_trainer_save(r->tr, r->a->checkpoint);
}

/* The group's speeds for an uneven split when its devices differ: each rank's measured SGEMM
 * rate (tsr-topo's, else the device's peak). 0 (even shares) when all of the group's devices
 * are one kind of device: identical devices share one rate whatever the measurement noise. */
static int lm_measured_speeds(tsr_context *ctx, const char *device, tsr_comm *comm, int rank, size_t K,
                              double *speed) {
    int idx = device ? tsr_context_find_device(ctx, device) : 0;
    const tsr_device_info *d = tsr_context_device(ctx, idx < 0 ? 0 : idx);
    struct {
        double rate;
        char name[128];
    } mine, *all;
    memset(&mine, 0, sizeof mine);
    mine.rate = d && d->gemm_gflops > 0 ? d->gemm_gflops : d && d->peak_gflops > 0 ? d->peak_gflops : 1.0;
    snprintf(mine.name, sizeof mine.name, "%s", d ? d->name : "?");
    int size = tsr_comm_size(comm), group = rank / (int)K, differ = 0;
    size_t *bytes = calloc((size_t)size, sizeof *bytes);
    all = calloc((size_t)size, sizeof *all);
    if (!bytes || !all) {
        free(bytes), free(all);
        return 0;
    }
    for (int q = 0; q < size; q++) bytes[q] = sizeof mine;
    if (tsr_comm_allgatherv(comm, &mine, all, bytes) == TSR_OK)
        for (size_t t = 0; t < K; t++) {
            speed[t] = all[(size_t)group * K + t].rate;
            differ |= strcmp(all[(size_t)group * K + t].name, all[(size_t)group * K].name) != 0;
        }
    free(bytes), free(all);
    return differ;
}

static int train_lm(tsr_context *ctx, args *a, tsr_trainer_options *to, tsr_comm *comm, int rank, int size,
                    int pp, const char *data_dir) {
    const char *mode_name = to->mode == TSR_MODE_ASYNC      ? "async"
                            : to->mode == TSR_MODE_GOSSIP   ? "gossip"
                            : to->mode == TSR_MODE_PIPELINE ? "pipeline"
                            : to->mode == TSR_MODE_HYBRID   ? "hybrid"
                            : comm                          ? "data"
                                                            : "single";
    tsr_gpt_config cfg;
    tsr_status s = tsr_gpt_config_parse(ctx, a->model, &cfg);
    if (s != TSR_OK) {
        if (rank == 0)
            fprintf(stderr, "tsr-train: option --model: %s holds token files (train.bin, val.bin), which "
                            "train a GPT: %s\n", data_dir, tsr_context_last_error(ctx));
        tsr_comm_free(comm);
        return 2;
    }
    size_t T = a->context ? (size_t)a->context : cfg.context;
    if (T > cfg.context) {
        if (rank == 0)
            fprintf(stderr, "tsr-train: option --context: %zu tokens, but %s holds %zu positions\n", T,
                    a->model, cfg.context);
        tsr_comm_free(comm);
        return 2;
    }
    char path[4096];
    tsr_tokens *train = NULL, *valt = NULL;
    snprintf(path, sizeof path, "%s/train.bin", data_dir);
    if ((s = tsr_tokens_load(ctx, path, &train)) != TSR_OK) die(ctx, s, "training data");
    snprintf(path, sizeof path, "%s/val.bin", data_dir);
    if ((s = tsr_tokens_load(ctx, path, &valt)) != TSR_OK) die(ctx, s, "validation data");
    if ((s = tsr_tokens_check_vocab(ctx, train, (uint32_t)cfg.vocab)) != TSR_OK ||
        (s = tsr_tokens_check_vocab(ctx, valt, (uint32_t)cfg.vocab)) != TSR_OK)
        die(ctx, s, "--data");
    lm_run r = {ctx, a, NULL, NULL, NULL, T, 0, (size_t)a->batch, rank};
    if ((s = tsr_model_create_gpt(ctx, &cfg, T, &r.model)) != TSR_OK) die(ctx, s, "--model");
    if (a->summary) tsr_model_summary(r.model, stderr);
    if ((s = tsr_dataset_from_tokens(ctx, valt, T, (size_t)a->val_windows, &r.val)) != TSR_OK)
        die(ctx, s, "validation data");

    /* pipeline stages: as listed, or even cuts moved to block boundaries (the library's) */
    size_t bounds[65], stages = 0;
    if (pp && a->stages) {
        if (!strcmp(a->stages, "auto") ||
            tsr_pipeline_bounds_parse(ctx, a->stages, tsr_model_layer_count(r.model), bounds, 65, &stages) !=
                TSR_OK) {
            if (rank == 0)
                fprintf(stderr, "tsr-train: option --stages: %s\n",
                        strcmp(a->stages, "auto") ? tsr_context_last_error(ctx)
                                                  : "auto is for image models; list the layers per stage");
            tsr_comm_free(comm);
            return 2;
        }
        to->stage_bounds = bounds;
    }
    /* tensor parallelism: groups of K consecutive ranks (they talk every layer); the ranks of
     * one index in their groups, in group order, are the data-parallel replicas, the pipeline
     * or the hybrid layout (rank = (replica x stages + stage) x K + index) */
    size_t K = a->tp > 1 ? (size_t)a->tp : 1, heads[4096], head0 = 0;
    tsr_comm *tp = NULL, *dpc = comm;
    tsr_model *share = NULL;
    if (K > 1) {
        size_t R = to->mode == TSR_MODE_HYBRID && to->replicas ? to->replicas : 1;
        char bound[200];
        const char *why = NULL;
        if (to->mode == TSR_MODE_ASYNC || to->mode == TSR_MODE_GOSSIP) {
            why = "composes with --mode data, pipeline and hybrid, not async or gossip";
        } else if ((size_t)size % (K * R)) {
            if (pp) snprintf(bound, sizeof bound, "%d ranks are not replicas %zu x tensor %zu x pipeline stages "
                             "(a multiple of %zu)", size, R, K, K * R);
            else snprintf(bound, sizeof bound, "%d ranks are not data x tensor %zu (a multiple of %zu)", size, K, K);
            why = bound;
        } else if (stages && stages != (size_t)size / K / R) {
            snprintf(bound, sizeof bound, "--stages lists %zu stages, but %d ranks / (tensor %zu x replicas %zu) "
                     "= %zu stages", stages, size, K, R, (size_t)size / K / R);
            why = bound;
        }
        double speed[4096];
        size_t n = 0;
        for (const char *p = a->tp_shares; !why && p && *p;) {
            char *end;
            double v = strtod(p, &end);
            if (end == p || n == K || !(v > 0)) why = "--tp-shares needs K positive numbers";
            else speed[n++] = v, p = *end == ',' ? end + 1 : end;
        }
        if (!why && a->tp_shares && n != K) why = "--tp-shares needs K positive numbers";
        if (!why && !a->tp_shares && lm_measured_speeds(ctx, to->device, comm, rank, K, speed)) n = K;
        if (!why && tsr_gpt_tp_split(ctx, &cfg, K, n ? speed : NULL, heads) != TSR_OK)
            why = tsr_context_last_error(ctx);
        if (why) {
            if (rank == 0) fprintf(stderr, "tsr-train: option --tp %zu: %s\n", K, why);
            tsr_comm_free(comm);
            return 2;
        }
        int t = rank % (int)K;
        for (int q = 0; q < t; q++) head0 += heads[q];
        if ((s = tsr_comm_split(comm, rank / (int)K, t, &tp)) != TSR_OK ||
            (s = tsr_comm_split(comm, t, rank / (int)K, &dpc)) != TSR_OK ||
            (s = tsr_model_create_gpt_tp(ctx, &cfg, T, head0, heads[t], &share)) != TSR_OK)
            die(ctx, s, "--tp");
        to->tp_comm = tp, to->tp_whole = r.model, to->tp_head0 = head0, to->tp_heads = heads[t];
        for (size_t q = 0; to->stage_bounds && q <= stages; q++) bounds[q] = tsr_gpt_tp_layer(&cfg, bounds[q]);
        if (rank == 0 && !a->quiet) {
            size_t S = pp ? (size_t)size / K / R : 1, D = (size_t)size / K / S;
            fprintf(stderr, "tsr-train: tensor parallel over %zu ranks, heads", K);
            for (size_t q = 0; q < K; q++) fprintf(stderr, " %zu", heads[q]);
            fprintf(stderr, " of %zu; %zu data-parallel replica%s x %zu pipeline stage%s\n", cfg.heads, D,
                    D == 1 ? "" : "s", S, S == 1 ? "" : "s");
        }
    }
    to->comm = size / (int)K > 1 ? dpc : NULL;
    if (!to->comm) to->compress = TSR_COMPRESS_NONE, to->shard_optimizer = 0;
    size_t *shares = calloc((size_t)size, sizeof *shares);
    tsr_data_split split;
    if (!shares) die(ctx, TSR_ERR_NO_MEMORY, "shares");
    if ((s = tsr_trainer_data_split(ctx, to, to->batch, a->seed, &split, shares)) != TSR_OK) {
        if (rank == 0) fprintf(stderr, "tsr-train: %s\n", tsr_context_last_error(ctx));
        tsr_comm_free(comm);
        return 2;
    }
    uint64_t steps = a->steps ? (uint64_t)a->steps : 1000;
    to->schedule.warmup_steps = (uint64_t)a->warmup;
    to->schedule.step_size = steps / 3 ? steps / 3 : 1;
    to->schedule.total_steps = steps > to->schedule.warmup_steps ? steps - to->schedule.warmup_steps : 1;
    to->schedule.min_lr = (float)a->min_lr;
    to->batch = split.step_batch;
    if ((s = tsr_trainer_create(ctx, share ? share : r.model, to, &r.tr)) != TSR_OK) die(ctx, s, "trainer");
    if (a->init && (s = init_params(ctx, r.tr, r.model, a->init)) != TSR_OK) die(ctx, s, "option --init");
    if (a->resume && (s = tsr_trainer_load(r.tr, a->resume)) != TSR_OK) die(ctx, s, "resume");
    int rc = checkpoint_unwritable(ctx, a, to, r.model, rank);
    if (rc) return rc;
    /* this rank's windows: its slice of each step's global draw (async servers draw none) */
    r.batch = split.loader.batch;
    tsr_tokens_sampler_options so = {T, r.batch ? r.batch : 1, tsr_trainer_seed(r.tr), split.loader.rank,
                                     split.loader.nranks, TSR_TOKENS_RANDOM};
    tsr_tokens_sampler *sampler;
    if ((s = tsr_tokens_sampler_create(ctx, train, &so, &sampler)) != TSR_OK) die(ctx, s, "training data");
    uint64_t start = tsr_trainer_steps(r.tr);
    double resumed_loss = NAN; /* the checkpoint's figures, reported when nothing is left to train */
    if (a->resume && tsr_trainer_metadata(r.tr)) {
        cJSON *j = cJSON_Parse(tsr_trainer_metadata(r.tr));
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "train_loss");
        if (cJSON_IsNumber(v)) resumed_loss = v->valuedouble;
        cJSON_Delete(j);
    }
    if (start && (s = tsr_tokens_sampler_seek(sampler, start)) != TSR_OK) die(ctx, s, "resume");
    int32_t *ids = malloc(so.batch * T * sizeof *ids), *targets = malloc(so.batch * T * sizeof *targets);
    if (!ids || !targets) die(ctx, TSR_ERR_NO_MEMORY, "batch");
    FILE *log = a->json ? stderr : stdout;
    /* the pre-clip norm of rank 0's last step (an async server steps nothing: none) */
    int report_norm = to->clip_grad_norm > 0 && to->mode != TSR_MODE_ASYNC;
    double t0 = now_seconds(), train_time = 0, window_loss = 0, last_loss = resumed_loss, val_loss = NAN, acc = 0;
    size_t window_steps = 0, tokens_done = 0;
    int interrupted = 0;
    /* tests/fault: TSR_FAULT_SIGTERM_AT_STEP=N and TSR_FAULT_KILL_AT_STEP=N[@RANK], as in the
     * image loop (first attempt only) */
    long long term_at = fault_term_point(rank);
    long long kill_at = fault_kill_point("TSR_FAULT_KILL_AT_STEP", rank);
    for (uint64_t step = start; step < steps && !interrupted; step++) {
        float loss;
        if (term_at >= 0 && step == (uint64_t)term_at) raise(SIGTERM);
        if (kill_at >= 0 && step == (uint64_t)kill_at) raise(SIGKILL);
        if ((s = tsr_tokens_sampler_next(sampler, ids, targets, NULL)) != TSR_OK) die(ctx, s, "training data");
        s = tsr_trainer_step_tokens(r.tr, ids, targets, r.batch, &loss);
        if (s == TSR_ERR_INTERRUPTED) interrupted = stop_signal ? stop_signal : SIGTERM;
        else if (s != TSR_OK) die(ctx, s, "step");
        if (comm && to->mode == TSR_MODE_DATA) loss = tsr_trainer_global_loss(r.tr);
        window_loss += loss, window_steps++;
        tokens_done += r.global_batch * T;
        int last = step + 1 == steps, eval = last || (a->eval_every && (step + 1) % (uint64_t)a->eval_every == 0);
        if (!eval && !interrupted) continue;
        double t1 = now_seconds();
        train_time += t1 - t0;
        last_loss = window_loss / (double)window_steps;
        if (!interrupted) {
            s = tsr_trainer_evaluate(r.tr, r.val, &acc, &val_loss);
            if (s == TSR_ERR_INTERRUPTED) /* async: the servers stopped while this worker evaluated */
                interrupted = stop_signal ? stop_signal : SIGTERM;
            else if (s != TSR_OK) die(ctx, s, "evaluate");
        }
        if (!interrupted) {
            if (rank == 0) {
                fprintf(log, "step %llu: train loss %.4f, val loss %.4f, %.0f tokens/s",
                        (unsigned long long)step + 1, last_loss, val_loss,
                        train_time > 0 ? (double)tokens_done / train_time : 0.0);
                if (report_norm) fprintf(log, ", grad norm %.4f", tsr_trainer_grad_norm(r.tr));
                fprintf(log, "\n");
            }
            fflush(log);
        }
        if ((s = lm_save(&r, last_loss, val_loss)) != TSR_OK) die(ctx, s, "checkpoint");
        if (interrupted && rank == 0)
            fprintf(stderr, "tsr-train: interrupted by %s at step %llu: %s\n",
                    interrupted == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)step + 1,
                    a->checkpoint ? "checkpoint written; resume with --resume" : "no --checkpoint, nothing saved");
        window_loss = 0, window_steps = 0;
        t0 = now_seconds();
    }
    if (start >= steps && (s = tsr_trainer_evaluate(r.tr, r.val, &acc, &val_loss)) != TSR_OK)
        die(ctx, s, "evaluate");
    if (a->json && rank == 0 && !interrupted) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", a->model);
        cJSON_AddStringToObject(j, "device", tsr_trainer_device(r.tr)->id);
        cJSON_AddStringToObject(j, "mode", mode_name);
        cJSON_AddNumberToObject(j, "ranks", size);
        cJSON_AddNumberToObject(j, "tp", (double)K);
        cJSON_AddNumberToObject(j, "steps", (double)tsr_trainer_steps(r.tr));
        cJSON_AddNumberToObject(j, "batch", (double)r.global_batch);
        cJSON_AddNumberToObject(j, "context", (double)T);
        cJSON_AddNumberToObject(j, "params", (double)tsr_model_param_count(r.model));
        cJSON_AddNumberToObject(j, "val_loss", val_loss);
        cJSON_AddNumberToObject(j, "val_accuracy", acc);
        if (isfinite(last_loss)) cJSON_AddNumberToObject(j, "final_loss", last_loss);
        else cJSON_AddNullToObject(j, "final_loss");
        cJSON_AddNumberToObject(j, "tokens_per_s", train_time > 0 ? (double)tokens_done / train_time : 0);
        cJSON_AddNumberToObject(j, "train_seconds", train_time);
        if (report_norm) cJSON_AddNumberToObject(j, "grad_norm", tsr_trainer_grad_norm(r.tr));
        char *text = cJSON_PrintUnformatted(j);
        printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(j);
    }
    free(ids);
    free(targets);
    free(shares);
    tsr_tokens_sampler_free(sampler);
    tsr_trainer_free(r.tr);
    tsr_model_free(share);
    if (dpc != comm) tsr_comm_free(dpc);
    tsr_comm_free(tp);
    tsr_dataset_free(ctx, r.val);
    tsr_model_free(r.model);
    tsr_tokens_free(train);
    tsr_tokens_free(valt);
    tsr_comm_free(comm);
    tsr_context_free(ctx);
    return interrupted ? 128 + interrupted : 0;
}
