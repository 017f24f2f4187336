/* html_api.c: opens libxml2 (libxml2.so.2) at run time (see lr_html.h for why). */
#include <pthread.h>
#include <stdarg.h>
#include "lr_html.h"

lr_xml_api lr_xml;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

#define LR_XML_NAME(ret, name, params) #name,
static const char *const names[] = {LR_XML_FUNCTIONS(LR_XML_NAME) NULL};
#undef LR_XML_NAME

/* libxml2 reports through per-thread channels; with HTML_PARSE_NOERROR the parser's
 * own reports stop, but XPath compile errors and a few others still go to the
 * generic channel (stderr by default). Our callers read errors from the context
 * (lastError), so the channels say nothing. */
static void quiet_generic(void *ctx, const char *msg, ...) {
  (void)ctx, (void)msg;
}
static void quiet_structured(void *ctx, xmlErrorPtr e) {
  (void)ctx, (void)e;
}

void lr_xml_quiet_thread(void) {
  lr_xml.xmlSetGenericErrorFunc(NULL, quiet_generic);
  lr_xml.xmlSetStructuredErrorFunc(NULL, quiet_structured);
}

int lr_xml_load(char *err, size_t errlen) {
  int rc = 0;
  pthread_mutex_lock(&load_lock);
  if (!loaded && (rc = lr_dynlib_load("libxml2.so.2", "", names, (void **)&lr_xml,
                                      "libxml2 (2.9 or newer)", err, errlen)) == 0) {
    /* Before any other thread uses the library (its thread notes): the pool's
     * threads parse only after this returns. */
    lr_xml.xmlInitParser();
    loaded = 1;
  }
  pthread_mutex_unlock(&load_lock);
  if (rc == 0) lr_xml_quiet_thread();
  return rc;
}
