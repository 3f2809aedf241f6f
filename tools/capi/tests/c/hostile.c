/*
 * hostile.c: calls every function of tessera.h with bad arguments (NULL handles, NULL and
 * tiny buffers, negative sizes, bad token ids, invalid UTF-8, missing/corrupt/truncated model
 * files, stale and foreign handles) and checks that each returns the documented status with
 * a non-empty tessera_last_error(), and that nothing crashes.
 *
 *   hostile MODEL CORRUPT_FILE TRUNCATED_FILE
 *
 * Prints one line per failed check and "N passed, M failed" at the end; exits 0 only when
 * every check passed. Run by tests/c_programs.rs.
 */
/* fork, setrlimit and waitpid (the address-space limit check). */
#define _XOPEN_SOURCE 700

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tessera.h"

static int passed = 0;
static int failed = 0;

/* Check that `got` is `want`; for an error, that the message is not empty. */
static void check(const char *expr, int line, tessera_status got, tessera_status want)
{
    const char *msg = tessera_last_error();
    if (msg == NULL) {
        printf("FAIL line %d: %s: tessera_last_error() returned NULL\n", line, expr);
        failed++;
        return;
    }
    if (got != want) {
        printf("FAIL line %d: %s returned %d (%s), expected %d (%s); message: %s\n", line, expr,
               (int)got, tessera_status_str(got), (int)want, tessera_status_str(want), msg);
        failed++;
        return;
    }
    if (want != TESSERA_OK && msg[0] == '\0') {
        printf("FAIL line %d: %s returned %d but tessera_last_error() is empty\n", line, expr,
               (int)got);
        failed++;
        return;
    }
    if (want == TESSERA_OK && msg[0] != '\0') {
        printf("FAIL line %d: %s succeeded but tessera_last_error() is \"%s\"\n", line, expr,
               msg);
        failed++;
        return;
    }
    passed++;
}

#define EXPECT(call, want) check(#call, __LINE__, (call), (want))
#define TRUE_OR_FAIL(cond)                                                                     \
    do {                                                                                       \
        if (cond) {                                                                            \
            passed++;                                                                          \
        } else {                                                                               \
            printf("FAIL line %d: %s\n", __LINE__, #cond);                                     \
            failed++;                                                                          \
        }                                                                                      \
    } while (0)

static void static_functions(void)
{
    TRUE_OR_FAIL(tessera_version() != NULL && tessera_version()[0] != '\0');
    TRUE_OR_FAIL(strcmp(tessera_status_str(12345), "unknown status") == 0);
    TRUE_OR_FAIL(strcmp(tessera_status_str(TESSERA_OK), "ok") == 0);
    TRUE_OR_FAIL(tessera_last_error() != NULL);
}

static void loading(const char *model_path, const char *corrupt, const char *truncated)
{
    tessera_model *m = (tessera_model *)1; /* must be reset to NULL on failure */
    tessera_model_params p = tessera_model_default_params();

    EXPECT(tessera_model_load(NULL, NULL, &m), TESSERA_ERR_NULL_POINTER);
    TRUE_OR_FAIL(m == NULL);
    EXPECT(tessera_model_load(model_path, NULL, NULL), TESSERA_ERR_NULL_POINTER);
    m = (tessera_model *)1;
    EXPECT(tessera_model_load("/nonexistent/dir/model.gguf", NULL, &m), TESSERA_ERR_LOAD_FAILED);
    TRUE_OR_FAIL(m == NULL);
    EXPECT(tessera_model_load(corrupt, NULL, &m), TESSERA_ERR_LOAD_FAILED);
    EXPECT(tessera_model_load(truncated, NULL, &m), TESSERA_ERR_LOAD_FAILED);
    EXPECT(tessera_model_load("/", NULL, &m), TESSERA_ERR_LOAD_FAILED);
    EXPECT(tessera_model_load("", NULL, &m), TESSERA_ERR_LOAD_FAILED);
    EXPECT(tessera_model_load("\xff\xfe.gguf", NULL, &m), TESSERA_ERR_LOAD_FAILED);

    p.device = "cuda";
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_UNSUPPORTED);
    p.device = "gpu:99999999999999"; /* no such adapter: refused at load, not at the context */
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_UNSUPPORTED);
    p.device = "\xff";
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_UTF8);
    p = tessera_model_default_params();
    p.n_threads = -1;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.n_batch = 0;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.n_ctx = -5;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.rope_scaling_type = 7;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.rope_freq_base = (float)NAN;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.rope_freq_scale = -2.0f;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.rope_freq_scale = 1e-45f; /* its inverse overflows: NaN logits, once */
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.rope_scaling_type = TESSERA_ROPE_SCALING_YARN;
    p.yarn_beta_fast = 0.5f; /* below beta_slow (1): refused with the file's values */
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.yarn_ext_factor = (float)INFINITY;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    p = tessera_model_default_params();
    p.yarn_orig_ctx = -1;
    EXPECT(tessera_model_load(model_path, &p, &m), TESSERA_ERR_INVALID_ARGUMENT);
    TRUE_OR_FAIL(m == NULL);

    /* Freeing: NULL is a no-op, foreign pointers are refused. */
    EXPECT(tessera_model_free(NULL), TESSERA_OK);
    EXPECT(tessera_context_free(NULL), TESSERA_OK);
    EXPECT(tessera_sampler_free(NULL), TESSERA_OK);
    EXPECT(tessera_model_free((tessera_model *)(void *)&p), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_context_free((tessera_context *)(void *)0x10), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_sampler_free((tessera_sampler *)(void *)0x20), TESSERA_ERR_INVALID_HANDLE);
}

static void model_info(tessera_model *m, int32_t n_vocab)
{
    tessera_model *bogus = (tessera_model *)(void *)0x1234;
    int32_t v = 0;
    int32_t needed = 0;
    char small[2];
    char buf[256];
    char *big;

    EXPECT(tessera_model_n_vocab(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_vocab(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_vocab(bogus, &v), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_model_n_ctx_train(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_ctx_train(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_ctx_train(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v > 0);
    EXPECT(tessera_model_n_layer(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_layer(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_layer(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 30);
    EXPECT(tessera_model_n_embd(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_embd(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_n_embd(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 576);
    EXPECT(tessera_model_token_bos(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_token_bos(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_token_bos(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v >= -1 && v < n_vocab);
    EXPECT(tessera_model_token_eos(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_token_eos(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_token_eos(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v >= 0 && v < n_vocab);

    /* Text getters and the buffer convention. */
    EXPECT(tessera_model_arch(NULL, buf, sizeof buf, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_arch(bogus, buf, sizeof buf, &needed), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_model_arch(m, NULL, 10, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_arch(m, buf, -1, &needed), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_model_arch(m, buf, sizeof buf, NULL), TESSERA_ERR_NULL_POINTER);
    needed = 0;
    EXPECT(tessera_model_arch(m, NULL, 0, &needed), TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed == 6); /* "llama" + NUL */
    small[0] = 'x';
    EXPECT(tessera_model_arch(m, small, sizeof small, &needed), TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed == 6 && small[0] == '\0');
    EXPECT(tessera_model_arch(m, buf, 6, &needed), TESSERA_OK);
    TRUE_OR_FAIL(strcmp(buf, "llama") == 0);

    EXPECT(tessera_model_chat_template(NULL, buf, sizeof buf, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_chat_template(m, NULL, 1, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_chat_template(m, buf, -3, &needed), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_model_chat_template(m, buf, sizeof buf, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_chat_template(m, small, sizeof small, &needed),
           TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed > 2);
    big = malloc((size_t)needed);
    if (big != NULL) {
        EXPECT(tessera_model_chat_template(m, big, needed, &needed), TESSERA_OK);
        TRUE_OR_FAIL(strstr(big, "im_start") != NULL && (int32_t)strlen(big) == needed - 1);
        free(big);
    }

    EXPECT(tessera_model_meta_val_str(NULL, "general.architecture", buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_val_str(m, NULL, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_val_str(m, "\xc3\x28", buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_UTF8);
    EXPECT(tessera_model_meta_val_str(m, "no.such.key", buf, sizeof buf, &needed),
           TESSERA_ERR_NOT_FOUND);
    EXPECT(tessera_model_meta_val_str(m, "general.architecture", NULL, 4, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_val_str(m, "general.architecture", buf, -4, &needed),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_model_meta_val_str(m, "general.architecture", buf, sizeof buf, NULL),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_val_str(m, "general.architecture", small, sizeof small, &needed),
           TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed == 6);
    EXPECT(tessera_model_meta_val_str(m, "general.architecture", buf, sizeof buf, &needed),
           TESSERA_OK);
    TRUE_OR_FAIL(strcmp(buf, "llama") == 0);
    EXPECT(tessera_model_meta_val_str(m, "llama.block_count", buf, sizeof buf, &needed),
           TESSERA_OK);
    TRUE_OR_FAIL(strcmp(buf, "30") == 0);

    EXPECT(tessera_model_meta_count(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_count(m, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_count(m, &v), TESSERA_OK);
    TRUE_OR_FAIL(v > 10);
    EXPECT(tessera_model_meta_key_by_index(NULL, 0, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_key_by_index(m, -1, buf, sizeof buf, &needed),
           TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_model_meta_key_by_index(m, v, buf, sizeof buf, &needed),
           TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_model_meta_key_by_index(m, 0, NULL, 8, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_key_by_index(m, 0, buf, sizeof buf, NULL),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_model_meta_key_by_index(m, 0, buf, sizeof buf, &needed), TESSERA_OK);
    TRUE_OR_FAIL(strlen(buf) > 0);
}

static void tokens(tessera_model *m, int32_t n_vocab)
{
    tessera_model *bogus = (tessera_model *)(void *)0x1234;
    const char *text = "The capital of France is";
    const int32_t len = (int32_t)strlen(text);
    const char bad_utf8[] = {'a', (char)0xc3, (char)0x28, 'b'};
    int32_t ids[64];
    int32_t one[1];
    int32_t n = 0;
    int32_t needed = 0;
    int32_t bad_ids[2];
    char buf[256];
    char tiny[1];
    bool eog = true;

    EXPECT(tessera_tokenize(NULL, text, len, true, true, ids, 64, &n), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_tokenize(bogus, text, len, true, true, ids, 64, &n),
           TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_tokenize(m, NULL, len, true, true, ids, 64, &n), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_tokenize(m, text, -1, true, true, ids, 64, &n), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_tokenize(m, bad_utf8, 4, true, true, ids, 64, &n), TESSERA_ERR_INVALID_UTF8);
    EXPECT(tessera_tokenize(m, text, len, true, true, NULL, 64, &n), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_tokenize(m, text, len, true, true, ids, -64, &n),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_tokenize(m, text, len, true, true, ids, 64, NULL), TESSERA_ERR_NULL_POINTER);
    n = 0;
    one[0] = -7;
    EXPECT(tessera_tokenize(m, text, len, true, true, one, 1, &n), TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(n == 5 && one[0] == -7); /* count reported, buffer untouched */
    EXPECT(tessera_tokenize(m, text, len, true, true, NULL, 0, &n), TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(n == 5);
    EXPECT(tessera_tokenize(m, text, len, true, true, ids, 64, &n), TESSERA_OK);
    TRUE_OR_FAIL(n == 5 && ids[0] == 504 && ids[4] == 314);
    EXPECT(tessera_tokenize(m, NULL, 0, true, true, ids, 64, &n), TESSERA_OK);
    EXPECT(tessera_tokenize(m, text, 0, false, false, NULL, 0, &n), TESSERA_OK);
    TRUE_OR_FAIL(n == 0);

    EXPECT(tessera_token_to_piece(NULL, 0, buf, sizeof buf, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_token_to_piece(bogus, 0, buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_token_to_piece(m, -1, buf, sizeof buf, &needed), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_token_to_piece(m, n_vocab, buf, sizeof buf, &needed),
           TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_token_to_piece(m, 7042, NULL, 16, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_token_to_piece(m, 7042, buf, -16, &needed), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_token_to_piece(m, 7042, buf, sizeof buf, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_token_to_piece(m, 7042, tiny, sizeof tiny, &needed),
           TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed == 7 && tiny[0] == '\0'); /* " Paris" + NUL */
    EXPECT(tessera_token_to_piece(m, 7042, buf, needed, &needed), TESSERA_OK);
    TRUE_OR_FAIL(strcmp(buf, " Paris") == 0);

    bad_ids[0] = 504;
    bad_ids[1] = n_vocab;
    EXPECT(tessera_detokenize(NULL, ids, 5, buf, sizeof buf, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_detokenize(m, NULL, 5, buf, sizeof buf, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_detokenize(m, ids, 0, buf, sizeof buf, &needed), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_detokenize(m, ids, -2, buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_detokenize(m, bad_ids, 2, buf, sizeof buf, &needed), TESSERA_ERR_OUT_OF_RANGE);
    bad_ids[1] = -1;
    EXPECT(tessera_detokenize(m, bad_ids, 2, buf, sizeof buf, &needed), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_detokenize(m, ids, 5, NULL, 3, &needed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_detokenize(m, ids, 5, buf, sizeof buf, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_detokenize(m, ids, 5, tiny, sizeof tiny, &needed),
           TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed == len + 1);
    EXPECT(tessera_detokenize(m, ids, 5, buf, sizeof buf, &needed), TESSERA_OK);
    TRUE_OR_FAIL(strcmp(buf, text) == 0);

    EXPECT(tessera_token_is_eog(NULL, 0, &eog), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_token_is_eog(m, 0, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_token_is_eog(m, -1, &eog), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_token_is_eog(m, n_vocab, &eog), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_token_is_eog(m, 504, &eog), TESSERA_OK);
    TRUE_OR_FAIL(!eog);
}

static void contexts_and_samplers(tessera_model *m, int32_t n_vocab)
{
    tessera_context *bogus = (tessera_context *)(void *)0x4321;
    tessera_context *ctx = (tessera_context *)1;
    tessera_context *small = NULL;
    tessera_sampler *smp = (tessera_sampler *)1;
    tessera_context_params cp = tessera_context_default_params();
    tessera_sampler_params sp = tessera_sampler_default_params();
    int32_t ids[5] = {504, 3575, 282, 4649, 314};
    int32_t bad[2] = {504, -1};
    int32_t nine[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float *logits = NULL;
    const float *row = NULL;
    uint64_t used = 0, total = 0, seed = 0;
    int32_t v = 0, tok = -1;

    EXPECT(tessera_context_new(NULL, NULL, &ctx), TESSERA_ERR_NULL_POINTER);
    TRUE_OR_FAIL(ctx == NULL);
    EXPECT(tessera_context_new(m, NULL, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_context_new((tessera_model *)(void *)0x99, NULL, &ctx),
           TESSERA_ERR_INVALID_HANDLE);
    cp.n_ctx = -1;
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp = tessera_context_default_params();
    cp.n_threads = -2;
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp = tessera_context_default_params();
    cp.device = 7; /* no such device */
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp = tessera_context_default_params();
    cp.device = TESSERA_DEVICE_GPU;
    cp.gpu_index = -1;
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp.gpu_index = 1000; /* past the last adapter: refused whether or not a GPU exists */
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp = tessera_context_default_params();
    cp.n_ctx = INT32_MAX; /* a KV cache far larger than any machine's memory */
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_ERR_INVALID_ARGUMENT);
    cp = tessera_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 2;
    EXPECT(tessera_context_new(m, &cp, &ctx), TESSERA_OK);
    cp.n_ctx = 8;
    EXPECT(tessera_context_new(m, &cp, &small), TESSERA_OK);

    /* A model handle is not a context handle, and the reverse. */
    EXPECT(tessera_n_past((tessera_context *)(void *)m, &v), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_model_n_vocab((tessera_model *)(void *)ctx, &v), TESSERA_ERR_INVALID_HANDLE);

    EXPECT(tessera_n_past(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_n_past(bogus, &v), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_n_past(ctx, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_n_ctx(NULL, &v), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_n_ctx(ctx, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_n_ctx(ctx, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 256);
    EXPECT(tessera_kv_bytes(NULL, &used, &total), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_kv_bytes(ctx, NULL, &total), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_kv_bytes(ctx, &used, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_kv_clear(NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_kv_clear(bogus), TESSERA_ERR_INVALID_HANDLE);

    /* No logits before the first decode. */
    EXPECT(tessera_get_logits(ctx, &logits), TESSERA_ERR_NO_LOGITS);
    EXPECT(tessera_get_logits_ith(ctx, 0, &logits), TESSERA_ERR_NO_LOGITS);

    EXPECT(tessera_decode(NULL, ids, 5, false), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_decode(bogus, ids, 5, false), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_decode(ctx, NULL, 5, false), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_decode(ctx, ids, 0, false), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_decode(ctx, ids, -5, false), TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_decode(ctx, bad, 2, false), TESSERA_ERR_OUT_OF_RANGE);
    bad[1] = n_vocab;
    EXPECT(tessera_decode(ctx, bad, 2, false), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_n_past(ctx, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 0); /* nothing was evaluated */
    EXPECT(tessera_decode(small, nine, 9, false), TESSERA_ERR_CONTEXT_FULL);

    EXPECT(tessera_decode(ctx, ids, 5, false), TESSERA_OK);
    EXPECT(tessera_n_past(ctx, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 5);
    EXPECT(tessera_kv_bytes(ctx, &used, &total), TESSERA_OK);
    TRUE_OR_FAIL(used > 0 && used < total);
    EXPECT(tessera_get_logits(NULL, &logits), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_get_logits(ctx, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_get_logits(ctx, &logits), TESSERA_OK);
    EXPECT(tessera_get_logits_ith(NULL, -1, &row), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_get_logits_ith(ctx, -1, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_get_logits_ith(ctx, -1, &row), TESSERA_OK);
    TRUE_OR_FAIL(row == logits && logits != NULL);
    EXPECT(tessera_get_logits_ith(ctx, 4, &row), TESSERA_OK);
    EXPECT(tessera_get_logits_ith(ctx, 0, &row), TESSERA_ERR_OUT_OF_RANGE); /* not all_logits */
    EXPECT(tessera_get_logits_ith(ctx, 5, &row), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_get_logits_ith(ctx, -6, &row), TESSERA_ERR_OUT_OF_RANGE);

    /* Samplers. */
    EXPECT(tessera_sampler_new(NULL, NULL), TESSERA_ERR_NULL_POINTER);
    sp.top_p = 2.0f;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    TRUE_OR_FAIL(smp == NULL);
    sp = tessera_sampler_default_params();
    sp.temp = -1.0f;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    sp = tessera_sampler_default_params();
    sp.temp = (float)NAN;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    sp = tessera_sampler_default_params();
    sp.top_k = -3;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    sp = tessera_sampler_default_params();
    sp.penalty_last_n = -2;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    sp = tessera_sampler_default_params();
    sp.greedy = true;
    sp.temp = -1.0f; /* unused when greedy, but still not a temperature */
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_ERR_INVALID_ARGUMENT);
    sp = tessera_sampler_default_params();
    sp.seed = 42;
    sp.greedy = true;
    EXPECT(tessera_sampler_new(&sp, &smp), TESSERA_OK);

    EXPECT(tessera_sampler_sample(NULL, ctx, &tok), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_sample(smp, NULL, &tok), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_sample(smp, ctx, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_sample((tessera_sampler *)(void *)ctx, ctx, &tok),
           TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_sampler_sample(smp, small, &tok), TESSERA_ERR_NO_LOGITS);
    EXPECT(tessera_sampler_sample(smp, ctx, &tok), TESSERA_OK);
    TRUE_OR_FAIL(tok == 7042); /* " Paris" */
    EXPECT(tessera_sampler_accept(NULL, m, tok), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_accept(smp, NULL, tok), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_accept(smp, m, -1), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_sampler_accept(smp, m, n_vocab), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_sampler_accept(smp, m, tok), TESSERA_OK);
    EXPECT(tessera_sampler_reset(NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_reset((tessera_sampler *)(void *)0x77), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_sampler_reset(smp), TESSERA_OK);
    EXPECT(tessera_sampler_seed(NULL, &seed), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_seed(smp, NULL), TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_sampler_seed(smp, &seed), TESSERA_OK);
    TRUE_OR_FAIL(seed == 42);

    /* All rows with all_logits; the last row equals the last-token-only decode's. */
    EXPECT(tessera_kv_clear(ctx), TESSERA_OK);
    EXPECT(tessera_get_logits(ctx, &logits), TESSERA_ERR_NO_LOGITS);
    EXPECT(tessera_n_past(ctx, &v), TESSERA_OK);
    TRUE_OR_FAIL(v == 0);
    EXPECT(tessera_decode(ctx, ids, 5, true), TESSERA_OK);
    EXPECT(tessera_get_logits_ith(ctx, 0, &row), TESSERA_OK);
    EXPECT(tessera_get_logits_ith(ctx, 4, &row), TESSERA_OK);
    EXPECT(tessera_get_logits_ith(ctx, 5, &row), TESSERA_ERR_OUT_OF_RANGE);
    EXPECT(tessera_sampler_sample(smp, ctx, &tok), TESSERA_OK);
    TRUE_OR_FAIL(tok == 7042);

    /* Free the model first: its contexts keep working. */
    EXPECT(tessera_model_free(m), TESSERA_OK);
    EXPECT(tessera_model_free(m), TESSERA_ERR_INVALID_HANDLE); /* double free is detected */
    EXPECT(tessera_model_n_vocab(m, &v), TESSERA_ERR_INVALID_HANDLE); /* so is use after free */
    EXPECT(tessera_decode(ctx, &tok, 1, false), TESSERA_OK);
    EXPECT(tessera_sampler_sample(smp, ctx, &tok), TESSERA_OK);
    TRUE_OR_FAIL(tok == 30); /* "." */

    EXPECT(tessera_sampler_free(smp), TESSERA_OK);
    EXPECT(tessera_sampler_free(smp), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_sampler_seed(smp, &seed), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_context_free(small), TESSERA_OK);
    EXPECT(tessera_context_free(ctx), TESSERA_OK);
    EXPECT(tessera_context_free(ctx), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_decode(ctx, ids, 5, false), TESSERA_ERR_INVALID_HANDLE);
    EXPECT(tessera_kv_clear(ctx), TESSERA_ERR_INVALID_HANDLE);
}

static void chat(tessera_model *m)
{
    const char *roles[2] = {"system", "user"};
    const char *contents[2] = {"You are helpful.", "Hi!"};
    const char *with_null[2] = {"system", NULL};
    const char *bad_utf8[2] = {"system", "\xe2\x82"};
    int32_t needed = 0;
    char buf[512];
    char tiny[4];

    EXPECT(tessera_chat_apply_template(NULL, roles, contents, 2, true, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, NULL, contents, 2, true, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, NULL, 2, true, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, contents, 0, true, buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_chat_apply_template(m, roles, contents, -1, true, buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_chat_apply_template(m, with_null, contents, 2, true, buf, sizeof buf,
                                       &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, with_null, 2, true, buf, sizeof buf, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, bad_utf8, 2, true, buf, sizeof buf, &needed),
           TESSERA_ERR_INVALID_UTF8);
    EXPECT(tessera_chat_apply_template(m, roles, contents, 2, true, NULL, 10, &needed),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, contents, 2, true, buf, -10, &needed),
           TESSERA_ERR_INVALID_ARGUMENT);
    EXPECT(tessera_chat_apply_template(m, roles, contents, 2, true, buf, sizeof buf, NULL),
           TESSERA_ERR_NULL_POINTER);
    EXPECT(tessera_chat_apply_template(m, roles, contents, 2, true, tiny, sizeof tiny, &needed),
           TESSERA_ERR_BUFFER_TOO_SMALL);
    TRUE_OR_FAIL(needed > (int32_t)sizeof tiny && tiny[0] == '\0');
    EXPECT(tessera_chat_apply_template(m, roles, contents, 2, true, buf, sizeof buf, &needed),
           TESSERA_OK);
    TRUE_OR_FAIL((int32_t)strlen(buf) == needed - 1);
    TRUE_OR_FAIL(strstr(buf, "<|im_start|>user\nHi!<|im_end|>") != NULL);
    TRUE_OR_FAIL(strcmp(buf + strlen(buf) - strlen("<|im_start|>assistant\n"),
                        "<|im_start|>assistant\n") == 0);
}

/*
 * Under a 4 GiB address-space limit (ulimit -v), a context whose KV cache (about 6.9 GB for
 * SmolLM2 at 300000 tokens) fits in the machine's MemTotal but not under the limit is refused
 * with TESSERA_ERR_INVALID_ARGUMENT, not an abort. Run in a child process, whose limit does
 * not reach the other checks.
 */
static void address_space_limit(tessera_model *m)
{
    pid_t pid = fork();
    int status = 0;
    if (pid == 0) {
        struct rlimit rl = {4ull << 30, 4ull << 30};
        tessera_context *ctx = NULL;
        tessera_context_params cp = tessera_context_default_params();
        if (setrlimit(RLIMIT_AS, &rl) != 0) {
            _exit(3);
        }
        cp.n_ctx = 300000;
        tessera_status st = tessera_context_new(m, &cp, &ctx);
        if (st == TESSERA_ERR_INVALID_ARGUMENT && ctx == NULL
            && strstr(tessera_last_error(), "RLIMIT_AS") != NULL) {
            _exit(0);
        }
        printf("under ulimit -v: status %d, error: %s\n", (int)st, tessera_last_error());
        _exit(1);
    }
    TRUE_OR_FAIL(pid > 0);
    TRUE_OR_FAIL(waitpid(pid, &status, 0) == pid);
    TRUE_OR_FAIL(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
    tessera_model *m = NULL;
    tessera_model_params p;
    int32_t n_vocab = 0;

    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL CORRUPT_FILE TRUNCATED_FILE\n", argv[0]);
        return 2;
    }
    static_functions();
    loading(argv[1], argv[2], argv[3]);

    p = tessera_model_default_params();
    p.device = "cpu";
    p.n_threads = 2;
    EXPECT(tessera_model_load(argv[1], &p, &m), TESSERA_OK);
    if (m == NULL) {
        printf("cannot go on without the model: %s\n", tessera_last_error());
        return 1;
    }
    EXPECT(tessera_model_n_vocab(m, &n_vocab), TESSERA_OK);
    TRUE_OR_FAIL(n_vocab == 49152);

    model_info(m, n_vocab);
    address_space_limit(m);
    tokens(m, n_vocab);
    chat(m);
    contexts_and_samplers(m, n_vocab); /* frees the model */

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
