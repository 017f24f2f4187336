---@meta luarun
local lr = {}

-- Annotations of `require "luarun"` for lua-language-server (LuaCATS).
-- The reference with examples: docs/reference/luarun.md.

---An error value: `kind` to test on, `message` for people; `tostring(err)` reads well.
---@alias luarun.Error {kind: string, message: string, seconds?: number, url?: string, path?: string, code?: string}

---`limit`: at most that many run at once; `settle`: collect `{ok =, value =|error =}` records instead of raising;
---`progress`: true, or a label, draws a progress line on stderr (done/total, failures, rate, ETA) when it is a terminal.
---@alias luarun.GroupOpts {limit?: integer, settle?: boolean, progress?: boolean|string}

---@alias luarun.Settled {ok: boolean, value?: any, error?: any}

---@alias luarun.Results {n: integer, [integer]: any}

---@alias luarun.TaskRecord {id: integer, name: string, state: string, waiting?: string, spawned_at?: string, traceback?: string, main: boolean, task: luarun.Task}

---@alias luarun.Stats {tasks: integer, sleeping: integer, handles: integer}

---The version of luarun, such as "0.1.0".
---@type string
lr.version = ""

---Module form only: runs `fn(...)` as the main task and drives the loop until it and
---every task it spawned have finished. Returns `fn`'s results; raises its error, a
---deadlock, or when a task failed unhandled. Raises inside a task.
---@param fn async fun(...): ...
---@param ... any
---@return any ...
function lr.run(fn, ...) end

---Suspends the calling task for at least `seconds`; `sleep(0)` lets the others run.
---@async
---@param seconds number
function lr.sleep(seconds) end

---A monotonic clock, in seconds.
---@return number
function lr.now() end

---Live tasks, sleeping tasks and active loop handles, for leak checks.
---@return luarun.Stats
function lr.stats() end

---Starts `fn(...)` as a new task.
---@param fn async fun(...): ...
---@param ... any
---@return luarun.Task
function lr.spawn(fn, ...) end

---The running task, or nil outside tasks.
---@return luarun.Task?
function lr.current() end

---Every live task, in spawn order.
---@return luarun.TaskRecord[]
function lr.tasks() end

---Runs functions (or tasks) concurrently: the first result of each, in order. The first
---error cancels the rest and is raised. `lr.gather(list [, opts])` returns a table with `n`.
---@async
---@param ... (async fun(): any)|luarun.Task
---@return any ...
---@overload fun(list: ((async fun(): any)|luarun.Task)[], opts?: luarun.GroupOpts): luarun.Results
function lr.gather(...) end

---Calls `fn(item, i)` for every item concurrently; a table of first results with `n`.
---`opts.progress` draws a progress line on stderr when it is a terminal.
---@async
---@param list any[]
---@param fn async fun(item: any, i: integer): any
---@param opts? luarun.GroupOpts
---@return luarun.Results
function lr.map(list, fn, opts) end

---`fn(...)`'s results, or `nil, err` (kind "timeout") after cancelling it.
---@async
---@param seconds number
---@param fn async fun(...): ...
---@param ... any
---@return any ...
function lr.timeout(seconds, fn, ...) end

---Runs `fn(scope, ...)` as a task; `scope:spawn` adds tasks. Returns fn's results once
---all have ended; the first failure cancels the rest and is raised.
---@async
---@param fn async fun(scope: luarun.Scope, ...): ...
---@param ... any
---@return any ...
function lr.scope(fn, ...) end

---The results (or error) of the first to end; the others are cancelled and have unwound.
---@async
---@param ... (async fun(): ...)|luarun.Task
---@return any ...
---@overload fun(list: ((async fun(): ...)|luarun.Task)[]): ...
function lr.race(...) end

---For a generic `for`: index and first result of each item, in the order they end.
---Leaving the loop cancels what still runs.
---@param list ((async fun(): any)|luarun.Task)[]
---@param opts? {settle?: boolean}
---@return async fun(): integer?, any
function lr.as_completed(list, opts) end

---Runs `fn(...)` on a worker thread with its own Lua state. `fn` may use no upvalue but
---`_ENV`, or is a "module.function" name; arguments and results are copied.
---@async
---@param fn (fun(...): ...)|string
---@param ... any
---@return any ...
function lr.run_in_pool(fn, ...) end

---The number of pool workers; sets it (and `opts.memory_limit` in bytes per worker)
---before the pool's first use.
---@param n? integer
---@param opts? {memory_limit?: number}
---@return integer
function lr.pool_size(n, opts) end

---A semaphore of `n` permits.
---@param n integer
---@return luarun.Semaphore
function lr.Semaphore(n) end

---A lock: one holder at a time, released only by its holder.
---@return luarun.Lock
function lr.Lock() end

---An event that tasks wait for; starts not set.
---@return luarun.Event
function lr.Event() end

---At most `n` acquisitions in any window of `per_seconds` (a sliding window).
---@param n integer
---@param per_seconds number
---@return luarun.RateLimit
function lr.RateLimit(n, per_seconds) end

---A FIFO between tasks holding at most `maxsize` items (unbounded without it).
---@param maxsize? integer
---@return luarun.Queue
function lr.Queue(maxsize) end

---@class luarun.Task
local Task = {}

---The task's results once it has ended; raises its error (or `cancelled`).
---@async
---@return any ...
function Task:wait() end

---Raises `cancelled` inside the task at its current or next wait.
function Task:cancel() end

---Whether the task has ended.
---@return boolean
function Task:done() end

---"ready", "running", "waiting", "done", "failed" or "cancelled".
---@return string
function Task:status() end

---@return integer
function Task:id() end

---The name given with set_name, or "task N".
---@return string
function Task:name() end

---Names the task (nil removes the name); returns the task.
---@param name string?
---@return luarun.Task
function Task:set_name(name) end

---@class luarun.Semaphore
local Semaphore = {}

---Waits for a permit; returns the semaphore (for `local _ <close> = s:acquire()`).
---@async
---@return luarun.Semaphore
function Semaphore:acquire() end

---Gives a permit back.
function Semaphore:release() end

---Acquires, calls `fn(...)`, releases however it ends; returns fn's results.
---@async
---@param fn fun(...): ...
---@param ... any
---@return any ...
function Semaphore:with(fn, ...) end

---Free permits.
---@return integer
function Semaphore:available() end

---Whether no permit is free.
---@return boolean
function Semaphore:locked() end

---@class luarun.Lock
local Lock = {}

---Waits for the lock; returns it (for `<close>`). Raises if this task holds it already.
---@async
---@return luarun.Lock
function Lock:acquire() end

---Releases the lock; only its holder may.
function Lock:release() end

---Holds the lock while calling `fn(...)`; returns fn's results.
---@async
---@param fn fun(...): ...
---@param ... any
---@return any ...
function Lock:with(fn, ...) end

---1 when free, 0 when held.
---@return integer
function Lock:available() end

---Whether the lock is held.
---@return boolean
function Lock:locked() end

---@class luarun.Event
local Event = {}

---Sets the event and wakes every waiter.
function Event:set() end

---Waits until the event is set; returns true.
---@async
---@return true
function Event:wait() end

---Unsets the event.
function Event:clear() end

---@return boolean
function Event:is_set() end

---@class luarun.RateLimit
local RateLimit = {}

---Waits until one more acquisition fits in the window.
---@async
function RateLimit:acquire() end

---@class luarun.Queue
---@operator len: integer
local Queue = {}

---Waits while full, then adds `item` (not nil). Raises on a closed queue.
---@async
---@param item any
function Queue:put(item) end

---Waits while empty; the oldest item, or `nil, err` (kind "closed") once closed and drained.
---@async
---@return any item
---@return luarun.Error? err
function Queue:get() end

---No more puts; waiting getters get `nil, err`, waiting putters raise.
function Queue:close() end

---@return boolean
function Queue:is_closed() end

---@class luarun.Scope
local Scope = {}

---Starts `fn(...)` as a task of the scope.
---@param fn async fun(...): ...
---@param ... any
---@return luarun.Task
function Scope:spawn(fn, ...) end

---Cancels every task of the scope; the scope then returns normally.
function Scope:cancel() end

return lr
