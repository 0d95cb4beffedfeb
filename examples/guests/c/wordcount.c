/*
 * wordcount: counts the lines, words and bytes of every file in /data (a read-only
 * mount), prints a table, and writes the totals to /out/totals.txt when /out is mounted
 * read-write. $GREETING (when the order lists it in wasm.env) is printed first.
 *
 * It also shows what the sandbox refuses: reading /etc/passwd fails, as does writing to
 * /data.
 *
 * Build (Debian: clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32):
 *   clang-14 --target=wasm32-wasi -O2 -o wordcount.wasm wordcount.c
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct counts {
    unsigned long lines, words, bytes;
};

static int count_file(const char *path, struct counts *c) {
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    int ch, in_word = 0;
    while ((ch = fgetc(f)) != EOF) {
        c->bytes++;
        if (ch == '\n') {
            c->lines++;
        }
        if (isspace(ch)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            c->words++;
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    const char *greeting = getenv("GREETING");
    if (greeting) {
        printf("%s\n", greeting);
    }
    printf("%s: counting /data\n", argc > 0 ? argv[0] : "wordcount");

    FILE *passwd = fopen("/etc/passwd", "r");
    printf("reading /etc/passwd: %s\n", passwd ? "ALLOWED (sandbox broken!)" : strerror(errno));
    FILE *intruder = fopen("/data/intruder.txt", "w");
    printf("writing into /data: %s\n", intruder ? "ALLOWED (sandbox broken!)" : strerror(errno));
    if (passwd || intruder) {
        return 3;
    }

    DIR *dir = opendir("/data");
    if (!dir) {
        fprintf(stderr, "cannot open /data: %s (mount it with wasm.dirs)\n", strerror(errno));
        return 2;
    }
    struct counts total = {0, 0, 0};
    struct dirent *entry;
    char path[512];
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') {
            continue;
        }
        struct counts c = {0, 0, 0};
        snprintf(path, sizeof path, "/data/%s", entry->d_name);
        if (count_file(path, &c) != 0) {
            fprintf(stderr, "skipping %s: %s\n", path, strerror(errno));
            continue;
        }
        printf("%8lu %8lu %8lu  %s\n", c.lines, c.words, c.bytes, entry->d_name);
        total.lines += c.lines;
        total.words += c.words;
        total.bytes += c.bytes;
    }
    closedir(dir);
    printf("%8lu %8lu %8lu  total\n", total.lines, total.words, total.bytes);

    FILE *out = fopen("/out/totals.txt", "w");
    if (out) {
        fprintf(out, "lines=%lu words=%lu bytes=%lu\n", total.lines, total.words, total.bytes);
        fclose(out);
        printf("wrote /out/totals.txt\n");
    }
    return 0;
}
