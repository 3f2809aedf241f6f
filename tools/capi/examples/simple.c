/*
 * simple.c: greedy text continuation through Tessera's C library.
 *
 *   simple MODEL PROMPT N
 *
 * Loads MODEL (a GGUF file), tokenizes PROMPT (special tokens added and parsed), generates up
 * to N tokens greedily (stopping early at an end-of-generation token), and prints the prompt's
 * continuation as it is generated. Frees everything; on any error prints
 * tessera_last_error() and exits with 1.
 *
 * Build (from the repository root):
 *   cargo build --release -p tessera-capi
 *   gcc -O2 tools/capi/examples/simple.c -Itools/capi/include target/release/libtessera.a \
 *       -lpthread -ldl -lm -o simple
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

/* Print the failed call and the library's message, and say "failed". */
static int fail(const char *what, tessera_status st)
{
    fprintf(stderr, "simple: %s failed (%d, %s): %s\n", what, (int)st, tessera_status_str(st),
            tessera_last_error());
    return 0;
}

/* Append the piece of `token` to stdout. Pieces are raw bytes (a UTF-8 character may be
 * split across tokens), which is fine for a byte stream like stdout. */
static int print_piece(const tessera_model *model, int32_t token)
{
    char small[64];
    int32_t needed = 0;
    tessera_status st = tessera_token_to_piece(model, token, small, (int32_t)sizeof small, &needed);
    if (st == TESSERA_ERR_BUFFER_TOO_SMALL) {
        char *big = malloc((size_t)needed);
        if (big == NULL) {
            fprintf(stderr, "simple: out of memory\n");
            return 0;
        }
        st = tessera_token_to_piece(model, token, big, needed, &needed);
        if (st == TESSERA_OK) {
            fwrite(big, 1, (size_t)(needed - 1), stdout);
        }
        free(big);
    } else if (st == TESSERA_OK) {
        fwrite(small, 1, (size_t)(needed - 1), stdout);
    }
    if (st != TESSERA_OK) {
        return fail("tessera_token_to_piece", st);
    }
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv)
{
    tessera_model *model = NULL;
    tessera_context *ctx = NULL;
    tessera_sampler *sampler = NULL;
    int32_t *tokens = NULL;
    int32_t n_tokens = 0;
    int ok = 0;
    long n_predict;
    char *end = NULL;
    tessera_status st;
    tessera_model_params mparams;
    tessera_sampler_params sparams;
    long i;

    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT N\n", argv[0]);
        return 2;
    }
    n_predict = strtol(argv[3], &end, 10);
    if (end == argv[3] || *end != '\0' || n_predict < 0 || n_predict > 1000000) {
        fprintf(stderr, "simple: N must be a number of tokens >= 0, not \"%s\"\n", argv[3]);
        return 2;
    }

    mparams = tessera_model_default_params();
    mparams.n_ctx = 2048;
    if ((st = tessera_model_load(argv[1], &mparams, &model)) != TESSERA_OK) {
        fail("tessera_model_load", st);
        goto done;
    }
    if ((st = tessera_context_new(model, NULL, &ctx)) != TESSERA_OK) {
        fail("tessera_context_new", st);
        goto done;
    }
    sparams = tessera_sampler_default_params();
    sparams.greedy = true;
    if ((st = tessera_sampler_new(&sparams, &sampler)) != TESSERA_OK) {
        fail("tessera_sampler_new", st);
        goto done;
    }

    /* Ask for the number of tokens, then tokenize into a buffer of that size. */
    st = tessera_tokenize(model, argv[2], (int32_t)strlen(argv[2]), true, true, NULL, 0,
                          &n_tokens);
    if (st != TESSERA_ERR_BUFFER_TOO_SMALL && st != TESSERA_OK) {
        fail("tessera_tokenize", st);
        goto done;
    }
    tokens = malloc(sizeof *tokens * (size_t)(n_tokens > 0 ? n_tokens : 1));
    if (tokens == NULL) {
        fprintf(stderr, "simple: out of memory\n");
        goto done;
    }
    if ((st = tessera_tokenize(model, argv[2], (int32_t)strlen(argv[2]), true, true, tokens,
                               n_tokens, &n_tokens)) != TESSERA_OK) {
        fail("tessera_tokenize", st);
        goto done;
    }
    if (n_tokens == 0) {
        fprintf(stderr, "simple: the prompt gives no tokens\n");
        goto done;
    }

    if ((st = tessera_decode(ctx, tokens, n_tokens, false)) != TESSERA_OK) {
        fail("tessera_decode (prompt)", st);
        goto done;
    }
    for (i = 0; i < n_predict; i++) {
        int32_t next = -1;
        bool eog = false;
        if ((st = tessera_sampler_sample(sampler, ctx, &next)) != TESSERA_OK) {
            fail("tessera_sampler_sample", st);
            goto done;
        }
        if ((st = tessera_sampler_accept(sampler, model, next)) != TESSERA_OK) {
            fail("tessera_sampler_accept", st);
            goto done;
        }
        if ((st = tessera_token_is_eog(model, next, &eog)) != TESSERA_OK) {
            fail("tessera_token_is_eog", st);
            goto done;
        }
        if (eog) {
            break;
        }
        if (!print_piece(model, next)) {
            goto done;
        }
        if (i + 1 < n_predict && (st = tessera_decode(ctx, &next, 1, false)) != TESSERA_OK) {
            fail("tessera_decode", st);
            goto done;
        }
    }
    printf("\n");
    ok = 1;

done:
    free(tokens);
    /* Any order is safe: contexts keep the model alive. Freeing NULL is a no-op. */
    if (tessera_sampler_free(sampler) != TESSERA_OK || tessera_context_free(ctx) != TESSERA_OK
        || tessera_model_free(model) != TESSERA_OK) {
        fprintf(stderr, "simple: free failed: %s\n", tessera_last_error());
        ok = 0;
    }
    return ok ? 0 : 1;
}
