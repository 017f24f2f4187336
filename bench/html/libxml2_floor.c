/* bench/html.sh's floor: libxml2's HTML parser alone, as luarun.html calls it.
 *   libxml2_floor MANIFEST REPS
 * Per page of the manifest (NAME URL FILE MULT lines, see gen_pages.py): after
 * max(2, MULT) warm-up parses, REPS * MULT times htmlReadMemory(UTF-8,
 * RECOVER|NOERROR|NOWARNING|NONET|COMPACT|XML_PARSE_HUGE) then xmlFreeDoc; prints
 *   page NAME parse_ms MEDIAN free_ms MEDIAN parse_cpu_ms MEDIAN free_cpu_ms MEDIAN
 * (wall clock, then the process's CPU time, which a busy machine disturbs less)
 * No selection, no text, no URLs: the time any binding of libxml2 pays first. */
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double ms_of(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static double now_ms(void) { return ms_of(CLOCK_MONOTONIC); }
static double cpu_ms(void) { return ms_of(CLOCK_PROCESS_CPUTIME_ID); }

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static char *slurp(const char *path, long *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *len = ftell(f);
  rewind(f);
  char *buf = malloc(*len ? *len : 1);
  if (buf && fread(buf, 1, *len, f) != (size_t)*len) { free(buf); buf = NULL; }
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: %s MANIFEST REPS\n", argv[0]); return 2; }
  int reps = atoi(argv[2]);
  const int opts = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                   HTML_PARSE_NONET | HTML_PARSE_COMPACT | XML_PARSE_HUGE;
  FILE *m = fopen(argv[1], "r");
  if (!m) { perror(argv[1]); return 1; }
  xmlInitParser();
  char name[64], url[512], path[512];
  int mult;
  while (fscanf(m, "%63s %511s %511s %d", name, url, path, &mult) == 4) {
    long len;
    char *buf = slurp(path, &len);
    if (!buf) { perror(path); return 1; }
    int n = reps * mult, warm = mult > 2 ? mult : 2;
    double *t[4]; /* wall parse, wall free, CPU parse, CPU free */
    for (int k = 0; k < 4; k++) t[k] = malloc(sizeof *t[k] * n);
    for (int i = 0; i < warm + n; i++) {
      double c0 = cpu_ms(), t0 = now_ms();
      htmlDocPtr doc = htmlReadMemory(buf, (int)len, url, "UTF-8", opts);
      double t1 = now_ms(), c1 = cpu_ms();
      if (!doc) { fprintf(stderr, "%s: no document\n", name); return 1; }
      xmlFreeDoc(doc);
      double t2 = now_ms(), c2 = cpu_ms();
      if (i >= warm) {
        t[0][i - warm] = t1 - t0, t[1][i - warm] = t2 - t1;
        t[2][i - warm] = c1 - c0, t[3][i - warm] = c2 - c1;
      }
    }
    for (int k = 0; k < 4; k++) qsort(t[k], n, sizeof *t[k], cmp);
    printf("page %s parse_ms %.3f free_ms %.3f parse_cpu_ms %.3f free_cpu_ms %.3f\n", name,
           t[0][(n - 1) / 2], t[1][(n - 1) / 2], t[2][(n - 1) / 2], t[3][(n - 1) / 2]);
    fflush(stdout);
    for (int k = 0; k < 4; k++) free(t[k]);
    free(buf);
  }
  fclose(m);
  return 0;
}
