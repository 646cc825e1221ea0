-- Feeds wrk one fresh, pre-minted WPT per request (bench/run.py mints the pool).
--
--   wrk ... -s bench/wpt_pool.lua URL -- POOL_FILE THREADS WIT
--
-- POOL_FILE holds one WPT per line. Thread i (0-based) of THREADS takes lines i, i+THREADS,
-- i+2*THREADS, ...: the slices are disjoint, so no token is sent twice while they last.
-- A thread whose slice runs out keeps sending its last token so that wrk still completes;
-- the gateway denies those requests as replays, and run.py declares such a run invalid
-- (it reads the per-thread counts that done() prints below).

local threads = {}
local next_id = 0

-- Runs in wrk's main Lua state, once per thread, just before that thread's init().
function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

-- Runs in the thread's own Lua state; everything set here is per-thread.
function init(args)
  local pool_file, thread_count, wit = args[1], tonumber(args[2]), args[3]
  if pool_file == nil or thread_count == nil or wit == nil then
    error("usage: wrk ... -s wpt_pool.lua URL -- POOL_FILE THREADS WIT")
  end
  tokens = {}
  local line_number = 0
  for line in io.lines(pool_file) do
    if line_number % thread_count == id and line ~= "" then
      tokens[#tokens + 1] = line
    end
    line_number = line_number + 1
  end
  if #tokens == 0 then
    error("wpt_pool.lua: thread " .. id .. " got no tokens from " .. pool_file)
  end
  size = #tokens   -- read back by done() through thread:get
  position = 0
  built = 0        -- request() calls; wrk calls it once more on thread 0 to check the script
  reused = 0       -- requests built after the slice ran out (each one is a replay)
  -- One table reused for every request: only the Authorization value changes.
  headers = { ["Workload-Identity-Token"] = wit, ["Authorization"] = "" }
end

function request()
  if position < size then
    position = position + 1
  else
    reused = reused + 1
  end
  built = built + 1
  headers["Authorization"] = "WPT " .. tokens[position]
  return wrk.format("GET", nil, headers)
end

-- Runs in the main state after the run; run.py parses these lines.
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("wpt_pool: thread=%d tokens=%d built=%d reused=%d\n",
      thread:get("id"), thread:get("size"), thread:get("built"), thread:get("reused")))
  end
end
