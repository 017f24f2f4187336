/* bench/html.sh's floor: libxml2's HTML parser alone, as luarun.html calls it.
 *   libxml2_floor MANIFEST REPS
 * Per page of the manifest (NAME URL FILE MULT lines, see gen_pages.py): after
 * max(2, MULT) warm-up parses, REPS * MULT times htmlReadMemory(UTF-8,
 * RECOVER|NOERROR|NOWARNING|NONET|COMPACT|XML_PARSE_HUGE) then xmlFreeDoc; prints
 *   page NAME parse_ms MEDIAN free_ms MEDIAN
 * No selection, no text, no URLs: the time any binding of libxml2 pays first. */
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

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
    double *tp = malloc(sizeof *tp * n), *tf = malloc(sizeof *tf * n);
    for (int i = 0; i < warm + n; i++) {
      double t0 = now_ms();
      htmlDocPtr doc = htmlReadMemory(buf, (int)len, url, "UTF-8", opts);
      double t1 = now_ms();
      if (!doc) { fprintf(stderr, "%s: no document\n", name); return 1; }
      xmlFreeDoc(doc);
      double t2 = now_ms();
      if (i >= warm) { tp[i - warm] = t1 - t0; tf[i - warm] = t2 - t1; }
    }
    qsort(tp, n, sizeof *tp, cmp);
    qsort(tf, n, sizeof *tf, cmp);
    printf("page %s parse_ms %.3f free_ms %.3f\n", name, tp[(n - 1) / 2], tf[(n - 1) / 2]);
    fflush(stdout);
    free(tp); free(tf); free(buf);
  }
  fclose(m);
  return 0;
}
