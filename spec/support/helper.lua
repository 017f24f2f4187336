-- Loaded by busted before the specs. With LUARUN_GC_STRESS set (the sanitizer run),
-- the collector runs almost continuously, so a value the runtime forgot to anchor is
-- collected, and its use caught by ASan, right away.
if os.getenv("LUARUN_GC_STRESS") then
  collectgarbage("incremental")
  collectgarbage("setpause", 10)
end
