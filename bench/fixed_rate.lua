-- An approximately fixed offered rate for wrk: each connection pauses THINK_MS between an
-- answer and its next request (wrk's delay() hook), optionally sending a fresh WPT from a
-- pool with each request (the pool logic is wpt_pool.lua's).
--
--   wrk ... -s bench/fixed_rate.lua URL -- THINK_MS CONNECTIONS_PER_THREAD [POOL_FILE THREADS WIT]
--
-- THINK_MS = connections / rate (bench/loadgen.py, think_time_ms). This is still a closed
-- loop: the achieved rate is below the offered one by latency / (THINK_MS + latency), and a
-- slow answer holds back its connection's next request (coordinated omission).
--
-- wrk waits whole milliseconds, so each pause is THINK_MS rounded down or up at random with
-- the right odds (its mean is THINK_MS). The first pause of each connection (wrk calls
-- delay() before every request, the first included) is drawn from [0, THINK_MS), so the
-- connections do not all send at the same moments.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wpt_pool.lua")  -- defines setup(), init(), request() and done() for a pool
local pool_setup, pool_init, pool_request, pool_done = setup, init, request, done
local first_thread

function setup(thread)
  pool_setup(thread)  -- numbers the threads (`id`)
  first_thread = first_thread or thread
end

function init(args)
  think_ms = tonumber(args[1])
  first_pauses = tonumber(args[2])  -- one per connection of this thread
  if think_ms == nil or first_pauses == nil then
    error("usage: wrk ... -s fixed_rate.lua URL -- THINK_MS CONNECTIONS_PER_THREAD"
      .. " [POOL_FILE THREADS WIT]")
  end
  pooled = args[3] ~= nil
  if pooled then
    pool_init({args[3], args[4], args[5]})
  else
    fixed_request = wrk.format()  -- method, path and -H headers as given to wrk
  end
  math.randomseed(os.time() + 7919 * id)
end

function request()
  if pooled then
    return pool_request()
  end
  return fixed_request
end

function delay()
  if first_pauses > 0 then
    first_pauses = first_pauses - 1
    return math.floor(math.random() * think_ms)
  end
  return math.floor(think_ms + math.random())
end

-- Runs in the main state: the pool's per-thread lines, when there is a pool.
function done(summary, latency, requests)
  if first_thread ~= nil and first_thread:get("pooled") then
    pool_done(summary, latency, requests)
  end
end
