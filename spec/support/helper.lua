-- Loaded by busted before the specs. With LUARUN_GC_STRESS set, the collector runs
-- eagerly, so a value the runtime forgot to anchor is collected at once.
if os.getenv("LUARUN_GC_STRESS") then
  collectgarbage("generational")
  collectgarbage("incremental", 0, 100)
end
