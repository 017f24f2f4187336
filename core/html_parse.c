/* html_parse.c: bytes to a libxml2 document, on the calling thread or on libuv's pool.
 *
 * A 1 MB page takes libxml2 some 30 ms, far more than a loop turn may take, so the
 * binding sends large pages here to the pool (uv_queue_work) while the task waits,
 * and gets the whole document back on the loop thread: libxml2 allows several threads
 * to parse different documents at once, and the document is touched by the loop
 * thread alone from then on (no node ever moves between documents). */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "lr_html.h"

xmlDoc *lr_html_parse(const lr_html_src *src, char encoding[24], char *err, size_t errlen) {
  lr_html_utf8 u;
  xmlDoc *doc = NULL;
  size_t i;
  if (lr_html_to_utf8(src, &u, err, errlen) != 0) return NULL;
  memcpy(encoding, u.encoding, sizeof u.encoding);
  if (u.len > INT_MAX) {
    lr_html_utf8_free(&u);
    snprintf(err, errlen, "document too large for libxml2 (%zu bytes)", u.len);
    return NULL;
  }
  /* Whitespace alone gives no tree in libxml2 (NULL, as for an empty string): both
   * become an empty document below rather than a failure. */
  for (i = 0; i < u.len && (u.p[i] == ' ' || (u.p[i] >= '\t' && u.p[i] <= '\r')); i++) {}
  if (i < u.len) {
    lr_xml_quiet_thread(); /* error channels are per thread */
    doc = lr_xml.htmlReadMemory(u.p, (int)u.len, NULL, "UTF-8", LR_HTML_OPTIONS);
  }
  lr_html_utf8_free(&u);
  if (doc == NULL && (doc = lr_xml.htmlNewDocNoDtD(NULL, NULL)) == NULL)
    snprintf(err, errlen, "out of memory");
  return doc;
}

/* ---- on the pool ---- */

lr_html_job *lr_html_job_new(const char *p, size_t len, const char *forced,
                             const char *content_type) {
  lr_html_job *j = calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  if ((j->bytes = malloc(len ? len : 1)) == NULL) {
    free(j);
    return NULL;
  }
  memcpy(j->bytes, p, len);
  j->src.p = j->bytes, j->src.len = len;
  if (forced) {
    snprintf(j->forced, sizeof j->forced, "%s", forced);
    j->src.forced = j->forced;
  }
  if (content_type) {
    snprintf(j->content_type, sizeof j->content_type, "%s", content_type);
    j->src.content_type = j->content_type;
  }
  return j;
}

void lr_html_job_free(lr_html_job *j) {
  if (j == NULL) return;
  if (j->doc) lr_xml.xmlFreeDoc(j->doc);
  free(j->bytes);
  free(j);
}

static void work_cb(uv_work_t *w) {
  lr_html_job *j = container_of(w, lr_html_job, work);
  j->doc = lr_html_parse(&j->src, j->encoding, j->err, sizeof j->err);
  free(j->bytes); /* early: the copy is as large as the page */
  j->bytes = NULL;
}

typedef struct {
  uv_work_t work;
  xmlDoc *doc;
} free_job;

static void free_work_cb(uv_work_t *w) {
  free_job *f = container_of(w, free_job, work);
  lr_xml.xmlFreeDoc(f->doc);
}

static void free_after_cb(uv_work_t *w, int status) {
  free_job *f = container_of(w, free_job, work);
  if (status == UV_ECANCELED) lr_xml.xmlFreeDoc(f->doc);
  free(f);
}

static void free_on(uv_loop_t *loop, xmlDoc *doc) {
  free_job *f = malloc(sizeof *f);
  if (f) {
    f->doc = doc;
    if (uv_queue_work(loop, &f->work, free_work_cb, free_after_cb) == 0) return;
    free(f);
  }
  lr_xml.xmlFreeDoc(doc);
}

void lr_html_free_later(lr_runtime *rt, xmlDoc *doc) {
  free_on(&rt->loop, doc);
}



/* Loop thread: the parse is done (or was dropped from the queue by cancel). */
static void after_cb(uv_work_t *w, int status) {
  lr_html_job *j = container_of(w, lr_html_job, work);
  lr_task *t = j->task;
  (void)status;
  if (t == NULL) { /* its task was cancelled: nobody wants the document */
    if (j->doc && status == 0) free_on(w->loop, j->doc); /* large: a while to free */
    else if (j->doc) lr_xml.xmlFreeDoc(j->doc);
    j->doc = NULL;
    lr_html_job_free(j);
    return;
  }
  j->task = NULL;
  lr_task_wake(t, LR_WAKE_DONE);
}

static lr_html_job *job_of(lr_task *t) {
  return container_of(t->inq, lr_html_job, q);
}

static void cancel(lr_task *t) {
  lr_html_job *j = job_of(t);
  j->task = NULL;
  /* Still queued: libuv drops it and after_cb (UV_ECANCELED) frees it. Running: it
   * ends, and after_cb frees the document it built. */
  uv_cancel((uv_req_t *)&j->work);
  lr_task_wake(t, LR_WAKE_CANCELLED);
}

static void describe(lua_State *L, lr_task *t) {
  lua_pushfstring(L, "html.parse, %d bytes on the pool", (int)job_of(t)->src.len);
}

int lr_html_park(lua_State *L, lr_task *t, lr_html_job *j, lua_KFunction k) {
  int rc;
  j->task = t;
  if ((rc = uv_queue_work(&t->rt->loop, &j->work, work_cb, after_cb)) != 0) {
    lr_html_job_free(j);
    return luaL_error(L, "html.parse: %s", uv_strerror(rc));
  }
  if (lr_observed(t->rt)) {
    lr_wait_desc d = {"html", "html.parse", 0, 0, 0, {{0}}};
    lr_wait_num(&d, "bytes", (double)j->src.len, 1);
    lr_hooks_wait(t->rt, t, &d);
  }
  lr_waitq_push(&j->q, t);
  return lr_task_park_on(L, t, cancel, describe, (lua_KContext)j, k);
}
