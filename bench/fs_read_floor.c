/* fs_read_floor.c: the least a program that keeps a large file's bytes in memory pays
 * to read it, with nothing around it: one fresh buffer of the file's size, filled by
 * two threads (this machine has two cores) with pread in 512 KiB steps, each step's
 * pages faulted in just before (MADV_POPULATE_WRITE), as luarun's read_file does; no
 * Lua, no string, no event loop. `cat file > /dev/null` keeps nothing (one hot 128 KiB
 * buffer), so it pays neither the fresh pages nor the second pass over them.
 *
 *   gcc -O2 -pthread -o floor bench/fs_read_floor.c
 *   ./floor FILE          -> exits 0 once the whole file is in the buffer
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEP ((size_t)512 << 10)

static int fd;
static char *buf;
static size_t size;

struct half {
  size_t from, to;
};

static void *fill(void *arg) {
  const struct half *h = arg;
  size_t at;
  for (at = h->from; at < h->to; at += STEP) {
    size_t n = h->to - at < STEP ? h->to - at : STEP;
#ifdef MADV_POPULATE_WRITE
    madvise(buf + at, n, MADV_POPULATE_WRITE); /* both ends page-aligned: mmap, STEP */
#endif
    if (pread(fd, buf + at, n, (off_t)at) != (ssize_t)n) {
      perror("pread");
      exit(1);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  struct stat st;
  struct half a, b;
  pthread_t t;
  if (argc != 2 || (fd = open(argv[1], O_RDONLY)) < 0 || fstat(fd, &st) < 0) {
    fprintf(stderr, "usage: floor FILE\n");
    return 2;
  }
  size = (size_t)st.st_size;
  buf = mmap(NULL, size + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) return 1;
  a.from = 0;
  a.to = b.from = (size / 2) & ~(STEP - 1);
  b.to = size;
  if (pthread_create(&t, NULL, fill, &b) != 0) return 1;
  fill(&a);
  pthread_join(t, NULL);
  return 0;
}
