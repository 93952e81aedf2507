/* A WASI command in C (clang + wasi-libc, built by the tests): prints its
 * arguments, echoes stdin in upper case, round-trips a file through /work,
 * shows that /etc/passwd and the worker's environment are out of reach,
 * then asks malloc for 1 GiB, past the default 512 MiB memory limit.
 *   clang --target=wasm32-wasi -O2 hello.c -o hello.wasm */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("arg %s\n", argv[i]);
    int c;
    while ((c = getchar()) != EOF) putchar(toupper(c));

    FILE *f = fopen("/work/note.txt", "w");
    if (!f) { perror("write /work/note.txt"); return 2; }
    fputs("kept", f);
    fclose(f);
    char note[16] = {0};
    f = fopen("note.txt", "r");
    if (!f) { perror("read note.txt"); return 2; }
    fgets(note, sizeof note, f);
    fclose(f);
    printf("note %s\n", note);

    printf("passwd %s\n", fopen("/etc/passwd", "r") ? "readable" : "denied");
    printf("HOME %s\n", getenv("HOME") ? getenv("HOME") : "unset");
    fflush(stdout);

    if (argc > 1 && argv[1][0] == 'b') {
        /* Through a volatile pointer: an unused allocation would be elided. */
        static char *volatile big;
        big = malloc((size_t)1 << 30);
        printf("1 GiB malloc %s\n", big ? "succeeded" : "returned NULL");
    }
    return 0;
}
