/*
 * grammar.c: structured output through the C API (tessera_sampler_set_grammar).
 *
 * usage: grammar MODEL
 *
 * Samples at temperature 0.8 under a JSON schema, a GBNF choice grammar and a regular
 * expression, with several seeds, and checks each text with a small checker written here
 * (the exact compact JSON shape the schema allows, membership in the choice list, the
 * regex's shape), and that every output ended with an end-of-generation token. The prompt's
 * tokens are fed to tessera_sampler_accept first (for the penalties): they must not advance
 * the grammar. tessera_sampler_reset must restart the grammar (the same seed gives the same
 * text again). Invalid grammars must fail with TESSERA_ERR_INVALID_ARGUMENT and a message
 * naming the problem (GBNF: line and column) and leave the previous grammar in force.
 * Prints "ok" and exits 0 when everything holds.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

#define MAX_TEXT 4096
#define N_SEEDS 3

static int failures = 0;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "grammar: line %d: ", __LINE__);                                      \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fprintf(stderr, " (last error: %s)\n", tessera_last_error());                         \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

#define OK(call) CHECK((call) == TESSERA_OK, "%s failed", #call)

static tessera_model *model = NULL;
static tessera_context *ctx = NULL;

/*
 * Generate at most `n_max` tokens after `prompt` with `sampler` (its grammar already set),
 * from an empty context, into `text` (NUL-terminated). Returns 1 when the output ended with
 * an end-of-generation token, 0 when it hit `n_max`, -1 on an error.
 */
static int generate(tessera_sampler *sampler, const char *prompt, int n_max, char *text)
{
    int32_t toks[256];
    int32_t n = 0;
    size_t len = 0;
    text[0] = '\0';
    if (tessera_kv_clear(ctx) != TESSERA_OK ||
        tessera_tokenize(model, prompt, (int32_t)strlen(prompt), true, true, toks, 256, &n) !=
            TESSERA_OK) {
        return -1;
    }
    /* Prompt tokens go to the penalties; the grammar must ignore them. */
    for (int32_t i = 0; i < n; i++) {
        if (tessera_sampler_accept(sampler, model, toks[i]) != TESSERA_OK) {
            return -1;
        }
    }
    if (tessera_decode(ctx, toks, n, false) != TESSERA_OK) {
        return -1;
    }
    for (int i = 0; i < n_max; i++) {
        int32_t next = -1;
        int32_t needed = 0;
        bool eog = false;
        if (tessera_sampler_sample(sampler, ctx, &next) != TESSERA_OK ||
            tessera_sampler_accept(sampler, model, next) != TESSERA_OK ||
            tessera_token_is_eog(model, next, &eog) != TESSERA_OK) {
            return -1;
        }
        if (eog) {
            return 1;
        }
        if (tessera_token_to_piece(model, next, text + len, (int32_t)(MAX_TEXT - len),
                                   &needed) != TESSERA_OK) {
            return -1;
        }
        len += (size_t)(needed - 1);
        text[len] = '\0';
        if (tessera_decode(ctx, &next, 1, false) != TESSERA_OK) {
            return -1;
        }
    }
    return 0;
}

/* Skip a JSON string starting at `*p` (the opening quote); 0 when it is not one. */
static int skip_string(const char **p)
{
    const char *s = *p;
    if (*s++ != '"') {
        return 0;
    }
    while (*s != '"') {
        if (*s == '\0' || (unsigned char)*s < 0x20) {
            return 0;
        }
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (!isxdigit((unsigned char)s[i])) {
                        return 0;
                    }
                }
                s += 4;
            } else if (strchr("\"\\/bfnrt", *s) == NULL || *s == '\0') {
                return 0;
            }
        }
        s++;
    }
    *p = s + 1;
    return 1;
}

/* Whether `text` is exactly {"name": STRING, "age": INTEGER in [0, 150]} in compact form. */
static int is_person(const char *text)
{
    const char *p = text;
    long age;
    char *end;
    if (strncmp(p, "{\"name\": ", 9) != 0) {
        return 0;
    }
    p += 9;
    if (!skip_string(&p) || strncmp(p, ", \"age\": ", 9) != 0) {
        return 0;
    }
    p += 9;
    if (!isdigit((unsigned char)*p) || (*p == '0' && isdigit((unsigned char)p[1]))) {
        return 0;
    }
    age = strtol(p, &end, 10);
    return age >= 0 && age <= 150 && strcmp(end, "}") == 0;
}

/* Whether `text` is ddd-dddd. */
static int is_phone(const char *text)
{
    if (strlen(text) != 8 || text[3] != '-') {
        return 0;
    }
    for (int i = 0; i < 8; i++) {
        if (i != 3 && !isdigit((unsigned char)text[i])) {
            return 0;
        }
    }
    return 1;
}

static int is_color(const char *text)
{
    return strcmp(text, "red") == 0 || strcmp(text, "green") == 0 || strcmp(text, "blue") == 0;
}

static const char *SCHEMA =
    "{\"type\": \"object\", \"properties\": {"
    "\"name\": {\"type\": \"string\", \"maxLength\": 16},"
    "\"age\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 150}},"
    "\"required\": [\"name\", \"age\"], \"additionalProperties\": false}";

static const char *CHOICE = "# a choice\nroot ::= \"red\" | \"green\" | \"blue\"\n";

int main(int argc, char **argv)
{
    tessera_model_params mp;
    tessera_sampler_params sp;
    tessera_sampler *sampler = NULL;
    static char text[MAX_TEXT], again[MAX_TEXT];
    int r;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    mp = tessera_model_default_params();
    mp.n_ctx = 512;
    if (tessera_model_load(argv[1], &mp, &model) != TESSERA_OK ||
        tessera_context_new(model, NULL, &ctx) != TESSERA_OK) {
        fprintf(stderr, "grammar: cannot load %s: %s\n", argv[1], tessera_last_error());
        return 1;
    }

    for (uint64_t seed = 1; seed <= N_SEEDS; seed++) {
        sp = tessera_sampler_default_params();
        sp.temp = 0.8f;
        sp.seed = seed;
        OK(tessera_sampler_new(&sp, &sampler));

        /* A JSON schema. */
        OK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_JSON_SCHEMA, SCHEMA));
        r = generate(sampler, "A person as JSON:\n", 64, text);
        CHECK(r == 1, "seed %d: the JSON output did not end (%d): %s", (int)seed, r, text);
        CHECK(is_person(text), "seed %d: not the schema's JSON: %s", (int)seed, text);
        printf("json  %d: %s\n", (int)seed, text);

        /* The same seed after a reset: the same text (the grammar restarted too). */
        OK(tessera_sampler_reset(sampler));
        r = generate(sampler, "A person as JSON:\n", 64, again);
        CHECK(r == 1 && strcmp(text, again) == 0, "seed %d: after reset: %s vs %s", (int)seed,
              again, text);

        /* A GBNF choice. */
        OK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_GBNF_OR_LARK, CHOICE));
        r = generate(sampler, "My favourite colour is", 8, text);
        CHECK(r == 1 && is_color(text), "seed %d: choice gave %s (%d)", (int)seed, text, r);
        printf("choice %d: %s\n", (int)seed, text);

        /* An invalid grammar keeps the previous one in force. */
        CHECK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_GBNF_OR_LARK,
                                          "root ::= foo\nfoo ::= \"a\" bar\n") ==
                  TESSERA_ERR_INVALID_ARGUMENT,
              "an undefined rule was accepted");
        CHECK(strstr(tessera_last_error(), "line 2, column 13") != NULL &&
                  strstr(tessera_last_error(), "undefined rule `bar`") != NULL,
              "the message does not say where and what");
        OK(tessera_sampler_reset(sampler));
        r = generate(sampler, "My favourite colour is", 8, text);
        CHECK(r == 1 && is_color(text), "seed %d: after a failed set: %s", (int)seed, text);

        /* A regular expression. */
        OK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_REGEX,
                                       "[0-9]{3}-[0-9]{4}"));
        r = generate(sampler, "Call me at", 16, text);
        CHECK(r == 1 && is_phone(text), "seed %d: regex gave %s (%d)", (int)seed, text, r);
        printf("regex %d: %s\n", (int)seed, text);

        /* NONE lifts the grammar (model and text may be NULL). */
        OK(tessera_sampler_set_grammar(sampler, NULL, TESSERA_GRAMMAR_NONE, NULL));
        r = generate(sampler, "My favourite colour is", 4, text);
        CHECK(r >= 0, "unconstrained generation failed");

        OK(tessera_sampler_free(sampler));
        sampler = NULL;
    }

    /* Errors: each names the problem. */
    OK(tessera_sampler_new(NULL, &sampler));
    CHECK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_GBNF_OR_LARK,
                                      "root := \"a\"\n") == TESSERA_ERR_INVALID_ARGUMENT &&
              strstr(tessera_last_error(), "line 1, column 6") != NULL,
          "`:=` was not refused at line 1, column 6");
    CHECK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_JSON_SCHEMA,
                                      "{\"type\": ") == TESSERA_ERR_INVALID_ARGUMENT &&
              strstr(tessera_last_error(), "not JSON") != NULL,
          "a broken schema was not refused");
    CHECK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_REGEX, "[0-9") ==
              TESSERA_ERR_INVALID_ARGUMENT,
          "a broken regex was not refused");
    CHECK(tessera_sampler_set_grammar(sampler, model, 42, "x") == TESSERA_ERR_INVALID_ARGUMENT &&
              strstr(tessera_last_error(), "kind is 42") != NULL,
          "an unknown kind was not refused");
    CHECK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_REGEX, NULL) ==
              TESSERA_ERR_NULL_POINTER,
          "a NULL text was not refused");
    CHECK(tessera_sampler_set_grammar(sampler, NULL, TESSERA_GRAMMAR_JSON_OBJECT, NULL) ==
              TESSERA_ERR_NULL_POINTER,
          "a NULL model was not refused");
    CHECK(tessera_sampler_set_grammar(NULL, model, TESSERA_GRAMMAR_NONE, NULL) ==
              TESSERA_ERR_NULL_POINTER,
          "a NULL sampler was not refused");
    /* A complete grammar only allows end-of-generation; after it, accept reports the end. */
    OK(tessera_sampler_set_grammar(sampler, model, TESSERA_GRAMMAR_GBNF_OR_LARK, CHOICE));
    r = generate(sampler, "My favourite colour is", 8, text);
    CHECK(r == 1 && is_color(text), "choice with defaults gave %s", text);
    {
        int32_t next = -1;
        bool eog = false;
        OK(tessera_sampler_sample(sampler, ctx, &next));
        OK(tessera_token_is_eog(model, next, &eog));
        CHECK(eog, "after the end the grammar allowed token %d", next);
        CHECK(tessera_sampler_accept(sampler, model, next) == TESSERA_ERR_GRAMMAR,
              "a token after the end was accepted");
    }
    OK(tessera_sampler_free(sampler));

    OK(tessera_context_free(ctx));
    OK(tessera_model_free(model));
    if (failures != 0) {
        fprintf(stderr, "grammar: %d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
