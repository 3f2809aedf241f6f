/*
 * batch.c: several sequences in one context through the C API, checked against each
 * sequence decoded alone.
 *
 * usage: batch MODEL
 *
 * Three prompts of different lengths are prefilled in one tessera_decode_batch call, then
 * decoded greedily together for STEPS steps (one token per sequence per call). Each
 * sequence's logits must be bit-identical (memcmp) to those of a one-sequence context fed the
 * same tokens with tessera_decode. Then: tessera_seq_copy forks a prefix that continues like
 * a fresh evaluation, tessera_seq_len/tessera_seq_truncate agree, and broken batches are
 * error codes (a sequence out of range, a position that does not continue, a token that did
 * not ask for logits). Prints "ok" and exits 0 when everything holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

#define N_SEQ 3
#define STEPS 6

static int failures = 0;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "batch: line %d: ", __LINE__);                                        \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fprintf(stderr, " (last error: %s)\n", tessera_last_error());                         \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

#define OK(call) CHECK((call) == TESSERA_OK, "%s failed", #call)

static int32_t argmax(const float *row, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (row[i] > row[best]) {
            best = i;
        }
    }
    return best;
}

static int32_t tokenize(const tessera_model *model, const char *text, int32_t *out, int32_t cap)
{
    int32_t n = 0;
    if (tessera_tokenize(model, text, (int32_t)strlen(text), true, false, out, cap, &n) !=
        TESSERA_OK) {
        fprintf(stderr, "batch: tokenize failed: %s\n", tessera_last_error());
        exit(1);
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *prompts[N_SEQ] = {
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived",
        "1, 2, 3,",
    };
    int32_t toks[N_SEQ][64];
    int32_t n_toks[N_SEQ];
    /* The tokens each sequence generates together, then alone. */
    int32_t gen[N_SEQ][STEPS];
    tessera_model *model = NULL;
    tessera_context *ctx = NULL;
    tessera_context_params cp;
    tessera_model_params mp;
    int32_t n_vocab = 0;
    /* Logits of every sequence at every step, batched: [step][seq][n_vocab]. */
    float *batched;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    mp = tessera_model_default_params();
    mp.n_ctx = 256;
    mp.n_threads = 2;
    if (tessera_model_load(argv[1], &mp, &model) != TESSERA_OK) {
        fprintf(stderr, "batch: load failed: %s\n", tessera_last_error());
        return 1;
    }
    OK(tessera_model_n_vocab(model, &n_vocab));
    batched = malloc(sizeof(float) * (size_t)(STEPS + 1) * N_SEQ * (size_t)n_vocab);
    if (batched == NULL) {
        return 1;
    }
    cp = tessera_context_default_params();
    cp.n_seq = N_SEQ;
    OK(tessera_context_new(model, &cp, &ctx));

    /* Prefill all three prompts in one call; by default each sequence's last token keeps
     * its logits. */
    {
        int32_t all[3 * 64], seq[3 * 64], n = 0, last[N_SEQ];
        for (int s = 0; s < N_SEQ; s++) {
            n_toks[s] = tokenize(model, prompts[s], toks[s], 64);
            for (int32_t i = 0; i < n_toks[s]; i++) {
                all[n] = toks[s][i];
                seq[n] = s;
                n++;
            }
            last[s] = n - 1;
        }
        OK(tessera_decode_batch(ctx, all, NULL, seq, NULL, n));
        for (int s = 0; s < N_SEQ; s++) {
            const float *row = NULL;
            OK(tessera_get_logits_ith(ctx, last[s], &row));
            if (row != NULL) {
                memcpy(batched + ((size_t)0 * N_SEQ + s) * n_vocab, row, sizeof(float) * n_vocab);
                gen[s][0] = argmax(row, n_vocab);
            }
        }
        /* A token that did not ask for logits has none. */
        {
            const float *row = NULL;
            CHECK(tessera_get_logits_ith(ctx, 0, &row) == TESSERA_ERR_OUT_OF_RANGE,
                  "token 0 kept no logits");
        }
    }
    /* Decode together: one token per sequence per call, positions implied. */
    for (int step = 1; step < STEPS; step++) {
        int32_t next[N_SEQ], seq[N_SEQ];
        for (int s = 0; s < N_SEQ; s++) {
            next[s] = gen[s][step - 1];
            seq[s] = s;
        }
        OK(tessera_decode_batch(ctx, next, NULL, seq, NULL, N_SEQ));
        for (int s = 0; s < N_SEQ; s++) {
            const float *row = NULL;
            OK(tessera_get_logits_ith(ctx, s, &row));
            if (row != NULL) {
                memcpy(batched + ((size_t)step * N_SEQ + s) * n_vocab, row,
                       sizeof(float) * n_vocab);
                gen[s][step] = argmax(row, n_vocab);
            }
        }
    }
    for (int s = 0; s < N_SEQ; s++) {
        int32_t len = -1;
        OK(tessera_seq_len(ctx, s, &len));
        CHECK(len == n_toks[s] + STEPS - 1, "seq %d holds %d tokens, expected %d", s, len,
              n_toks[s] + STEPS - 1);
    }

    /* Each sequence alone, in a one-sequence context: bit-identical logits. */
    for (int s = 0; s < N_SEQ; s++) {
        tessera_context *solo = NULL;
        OK(tessera_context_new(model, NULL, &solo));
        OK(tessera_decode(solo, toks[s], n_toks[s], false));
        for (int step = 0; step < STEPS; step++) {
            const float *row = NULL;
            if (step > 0) {
                OK(tessera_decode(solo, &gen[s][step - 1], 1, false));
            }
            OK(tessera_get_logits(solo, &row));
            if (row != NULL) {
                CHECK(memcmp(row, batched + ((size_t)step * N_SEQ + s) * n_vocab,
                             sizeof(float) * n_vocab) == 0,
                      "sequence %d step %d: batched logits differ from solo", s, step);
            }
        }
        OK(tessera_context_free(solo));
    }

    /* Fork: sequence 2 takes sequence 1's prompt and continues like sequence 1 did. */
    {
        const float *row = NULL;
        int32_t len = -1, seq = 2;
        OK(tessera_seq_copy(ctx, 1, 2, n_toks[1]));
        OK(tessera_seq_len(ctx, 2, &len));
        CHECK(len == n_toks[1], "forked sequence holds %d, expected %d", len, n_toks[1]);
        OK(tessera_decode_batch(ctx, &gen[1][0], NULL, &seq, NULL, 1));
        OK(tessera_get_logits_ith(ctx, 0, &row));
        if (row != NULL) {
            CHECK(memcmp(row, batched + ((size_t)1 * N_SEQ + 1) * n_vocab,
                         sizeof(float) * n_vocab) == 0,
                  "a forked prefix continues differently from the original");
        }
        OK(tessera_seq_truncate(ctx, 2, 3));
        OK(tessera_seq_len(ctx, 2, &len));
        CHECK(len == 3, "truncated sequence holds %d, expected 3", len);
    }

    /* Broken batches are error codes; nothing is evaluated. */
    {
        int32_t t = toks[0][0], bad_seq = N_SEQ, pos = 0, seq = 0, len_before = -1, len = -1;
        OK(tessera_seq_len(ctx, 0, &len_before));
        CHECK(tessera_decode_batch(ctx, &t, NULL, &bad_seq, NULL, 1) == TESSERA_ERR_OUT_OF_RANGE,
              "a sequence outside [0, n_seq) is out of range");
        CHECK(tessera_decode_batch(ctx, &t, &pos, &seq, NULL, 1) == TESSERA_ERR_INVALID_ARGUMENT,
              "a position that does not continue its sequence is invalid");
        CHECK(tessera_seq_clear(ctx, -1) == TESSERA_ERR_OUT_OF_RANGE, "seq -1 is out of range");
        CHECK(tessera_seq_copy(ctx, 0, 1, -5) == TESSERA_ERR_INVALID_ARGUMENT, "n -5");
        CHECK(tessera_decode_batch(ctx, NULL, NULL, NULL, NULL, 1) == TESSERA_ERR_NULL_POINTER,
              "NULL tokens");
        OK(tessera_seq_len(ctx, 0, &len));
        CHECK(len == len_before, "a refused batch changed sequence 0 (%d -> %d)", len_before,
              len);
    }
    OK(tessera_kv_clear(ctx));
    for (int s = 0; s < N_SEQ; s++) {
        int32_t len = -1;
        OK(tessera_seq_len(ctx, s, &len));
        CHECK(len == 0, "kv_clear left %d tokens in sequence %d", len, s);
    }

    OK(tessera_context_free(ctx));

    /* Sequences sharing a pool of 8 KV cells: 6 tokens fit, 3 more do not (nothing is
     * evaluated), and fit once a sequence lets its cells go. */
    {
        tessera_context_params pp = tessera_context_default_params();
        pp.n_ctx = 64;
        pp.n_seq = 2;
        pp.kv_cells = 8;
        struct tessera_context *pc = NULL;
        OK(tessera_context_new(model, &pp, &pc));
        int32_t six[6] = {1, 2, 3, 4, 5, 6}, three[3] = {7, 8, 9}, len = -1;
        int32_t s0[6] = {0, 0, 0, 0, 0, 0}, s1[3] = {1, 1, 1};
        OK(tessera_decode_batch(pc, six, NULL, s0, NULL, 6));
        CHECK(tessera_decode_batch(pc, three, NULL, s1, NULL, 3) == TESSERA_ERR_CONTEXT_FULL,
              "3 tokens with 2 cells free: the pool is full");
        OK(tessera_seq_len(pc, 1, &len));
        CHECK(len == 0, "a refused batch left %d tokens in sequence 1", len);
        OK(tessera_seq_clear(pc, 0));
        OK(tessera_decode_batch(pc, three, NULL, s1, NULL, 3));
        OK(tessera_seq_len(pc, 1, &len));
        CHECK(len == 3, "sequence 1 holds %d tokens, expected 3", len);
        OK(tessera_context_free(pc));
    }

    OK(tessera_model_free(model));
    free(batched);
    if (failures) {
        fprintf(stderr, "batch: %d checks failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
