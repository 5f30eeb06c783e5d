#include "cmd_validate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "util.h"

enum validate_status { VALIDATE_OK = 0, VALIDATE_REJECTED, VALIDATE_ERROR };

static void
validate_usage(FILE *out)
{
    fprintf(out,
            "usage: callpush validate FILE...\n"
            "\n"
            "Decodes each FILE (\"-\" for standard input) as one call event\n"
            "and prints whether the worker would accept it, and if not why.\n"
            "Exit status: 0 all accepted, 1 any rejected, 2 usage or read "
            "error.\n");
}

/*
 * Reads all of fp into *data, up to CMD_VALIDATE_FILE_MAX bytes. One byte
 * more is read than allowed, so that a larger file shows as *too_big rather
 * than being decoded cut short. Returns 0, or -1 with errno set.
 */
static int
validate_read(FILE *fp, char **data, size_t *len, int *too_big)
{
    size_t cap = (size_t)CMD_VALIDATE_FILE_MAX + 1;
    char *p = xmalloc(cap);
    size_t n = 0;

    while (n < cap) {
        size_t got = fread(p + n, 1, cap - n, fp);

        if (got == 0) {
            break;
        }
        n += got;
    }
    if (ferror(fp)) {
        int saved = errno;

        free(p);
        errno = saved != 0 ? saved : EIO;
        return -1;
    }

    *data = p;
    *len = n;
    *too_big = n > CMD_VALIDATE_FILE_MAX;
    return 0;
}

/* Validates one file and reports it. */
static enum validate_status
validate_one(const char *path)
{
    int from_stdin = strcmp(path, "-") == 0;
    FILE *fp = from_stdin ? stdin : fopen(path, "rb");
    enum validate_status status = VALIDATE_ERROR;
    char err[EVENT_ERR_MAX];
    char *data = NULL;
    struct event ev;
    int too_big;
    size_t len;

    if (fp == NULL) {
        fprintf(stderr, "callpush validate: %s: %s\n", path, strerror(errno));
        return VALIDATE_ERROR;
    }
    if (validate_read(fp, &data, &len, &too_big) < 0) {
        fprintf(stderr, "callpush validate: %s: %s\n", path, strerror(errno));
        goto done;
    }

    if (too_big) {
        printf("%s: rejected: file larger than %d bytes\n", path,
               CMD_VALIDATE_FILE_MAX);
        status = VALIDATE_REJECTED;
        goto done;
    }
    if (event_decode(&ev, data, len, err) < 0) {
        printf("%s: rejected: %s\n", path, err);
        status = VALIDATE_REJECTED;
        goto done;
    }
    printf("%s: ok (%s, %zu token%s)\n", path, event_type_name(ev.type),
           ev.ntokens, ev.ntokens == 1 ? "" : "s");
    event_release(&ev);
    status = VALIDATE_OK;

done:
    free(data);
    if (!from_stdin) {
        fclose(fp);
    }
    return status;
}

int
cmd_validate(int argc, char **argv)
{
    enum validate_status worst = VALIDATE_OK;
    int i;

    if (argc < 2) {
        validate_usage(stderr);
        return 2;
    }
    if (argc == 2 &&
        (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        validate_usage(stdout);
        return 0;
    }

    /* Any other option is a mistake, not a file to look for. */
    for (i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "callpush validate: unknown option %s\n", argv[i]);
            validate_usage(stderr);
            return 2;
        }
    }

    for (i = 1; i < argc; i++) {
        enum validate_status s = validate_one(argv[i]);

        if (s > worst) {
            worst = s;
        }
    }
    fflush(stdout);
    return worst == VALIDATE_OK ? 0 : worst == VALIDATE_REJECTED ? 1 : 2;
}
