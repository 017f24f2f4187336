/* stderr_hook.c: writing to stderr beside a line that another part keeps drawn there.
 *
 * A progress line (progress.c, two layers up) stays on the terminal's last row, with
 * no newline, while a group runs. A report written under it would be glued to its
 * end, and the next redraw would overwrite the report's last row. So whoever writes
 * to stderr on the loop's thread brackets the write with lr_stderr_begin/end, and the
 * part that draws sets the hook that clears its line and redraws it later. The
 * writers never learn who draws, and this layer never calls up except through the
 * pointer. stderr is one per process, and so is the hook.
 */
#include "lr_base.h"

static lr_stderr_hook hook;

void lr_stderr_set_hook(lr_stderr_hook fn) {
  hook = fn;
}

void lr_stderr_begin(void) {
  if (hook) hook(0);
}

void lr_stderr_end(void) {
  if (hook) hook(1);
}
